import csv

import pytest
import torch
from PIL import Image

from clipbackdoor.data.datasets import CsvPairs
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.eval_datasets import LabelsCsvClassification


def _write(tmp_path, rows, header=("image", "caption"), n_images=3, name="train.csv", delimiter=","):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(n_images):
        Image.new("RGB", (40, 30), (i * 40, 100, 200)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_reads_pairs_and_resizes_with_center_crop(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a red cat"), ("img/1.png", "a dog")])
    ds = CsvPairs(str(path), image_size=16)
    assert len(ds) == 2 and ds.caption(1) == "a dog" and ds.sample_id(0) == "img/0.png"
    images, keep = ds.load_images([0, 1])
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8 and keep.all()
    assert images[1, 2, 8, 8] == 200  # colour preserved through resize and crop


def test_pandas_index_column_and_extra_columns_are_ignored(tmp_path):
    path = _write(tmp_path, [("0", "img/0.png", "a cat", "0")], header=("", "image", "caption", "is_backdoor"))
    assert CsvPairs(str(path), image_size=8).caption(0) == "a cat"


def test_custom_keys_and_delimiter(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat")], header=("filepath", "title"), delimiter="\t")
    ds = CsvPairs(str(path), image_key="filepath", caption_key="title", delimiter="\t", image_size=8)
    assert ds.caption(0) == "a cat"


def test_wrong_columns_name_the_file_and_the_header(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat")], header=("path", "text"))
    with pytest.raises(DataError, match=r"train\.csv.*missing column.*'image'.*header has 'path', 'text'"):
        CsvPairs(str(path))


def test_empty_caption_names_the_line(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat"), ("img/1.png", "   ")])
    with pytest.raises(DataError, match=r"line 3: empty caption"):
        CsvPairs(str(path))


def test_caption_without_letters_is_rejected(tmp_path):
    path = _write(tmp_path, [("img/0.png", "1234 !!")])
    with pytest.raises(DataError, match=r"line 2: caption without letters"):
        CsvPairs(str(path))


def test_missing_image_file_names_the_file(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat"), ("img/9.png", "a dog")])
    with pytest.raises(DataError, match=r"line 3: image file not found: .*img/9\.png"):
        CsvPairs(str(path))


def test_skip_mode_drops_and_counts_bad_rows(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat"), ("img/9.png", "a dog"), ("img/1.png", "")])
    ds = CsvPairs(str(path), on_error="skip")
    assert len(ds) == 1
    assert sum(ds.skipped.values()) == 2


def test_corrupt_image_raises_or_is_dropped_from_the_batch(tmp_path):
    path = _write(tmp_path, [("img/0.png", "a cat"), ("img/1.png", "a dog")])
    (tmp_path / "img" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"line 3: cannot read image .*1\.png"):
        CsvPairs(str(path), image_size=8).load_images([0, 1])
    ds = CsvPairs(str(path), image_size=8, on_error="skip")
    _, keep = ds.load_images([0, 1])
    assert keep.tolist() == [True, False] and ds.skipped["unreadable image"] == 1


def test_ragged_row_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("image,caption\nimg/0.png,a cat,extra\n")
    with pytest.raises(DataError, match="line 2"):
        CsvPairs(str(path), check_files=False)


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="CSV file not found"):
        CsvPairs(str(tmp_path / "nope.csv"))


def test_labels_csv_classification(tmp_path):
    _write(tmp_path, [("img/0.png", "1"), ("img/1.png", "0")], header=("image", "label"), name="labels.csv")
    ds = LabelsCsvClassification(str(tmp_path), classnames=["cat", "banana"], templates=["a {}."], image_size=8)
    assert ds.labels.tolist() == [1, 0] and ds.load_images([0]).shape == (1, 3, 8, 8)
    bad = _write(tmp_path, [("img/0.png", "5")], header=("image", "label"), name="bad.csv")
    with pytest.raises(DataError, match="line 2: label 5 outside 0..1"):
        LabelsCsvClassification(str(bad), classnames=["cat", "banana"], templates=["a {}."])


def test_imagenet_metadata_from_open_clip():
    from clipbackdoor.data.eval_datasets import resolve_classnames, resolve_templates

    names = resolve_classnames("imagenet")
    assert len(names) == 1000 and names[954] == "banana"
    assert len(resolve_templates("openai_imagenet")) == 80


# --- bytes that are not UTF-8, long fields, paths outside the folder ---------------------------------------


def _write_bytes(tmp_path, body: bytes, name="train.csv"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / name
    path.write_bytes(body)
    return path


def test_a_row_that_is_not_utf8_names_the_line_or_is_skipped_and_counted(tmp_path):
    path = _write_bytes(tmp_path, b"image,caption\nimg/0.png,a cat\nimg/1.png,caf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"train\.csv: line 3: not valid UTF-8 \(byte 0xe9\)"):
        CsvPairs(str(path), image_size=8)
    ds = CsvPairs(str(path), image_size=8, on_error="skip")
    assert len(ds) == 1 and ds.caption(0) == "a cat"
    assert ds.skipped == {"not valid UTF-8": 1}
    result = ds.validate()
    assert result["rows"] == 2 and result["usable"] == 1 and "line 3: not valid UTF-8" in result["examples"][0]


def test_bad_bytes_in_a_column_that_is_not_read_do_not_matter(tmp_path):
    path = _write_bytes(tmp_path, b"image,caption,source\nimg/0.png,a cat,\xff\xfe\n")
    assert CsvPairs(str(path), image_size=8).caption(0) == "a cat"


def test_a_header_that_is_not_utf8_is_an_error_in_both_modes(tmp_path):
    path = _write_bytes(tmp_path, b"image,capti\xf3n\nimg/0.png,a cat\n")
    for mode in ("raise", "skip"):
        with pytest.raises(DataError, match=r"line 1: the header is not valid UTF-8 \(byte 0xf3\)"):
            CsvPairs(str(path), image_size=8, on_error=mode)


def test_a_utf8_byte_order_mark_is_allowed(tmp_path):
    path = _write_bytes(tmp_path, "\ufeffimage,caption\nimg/0.png,un caf\u00e9\n".encode())
    assert CsvPairs(str(path), image_size=8).caption(0) == "un caf\u00e9"


def test_captions_longer_than_the_csv_modules_default_field_limit_are_read(tmp_path):
    caption = "a photo of a red cat on a mat " * 10_000  # 300,000 characters, over csv's 131,072
    path = _write(tmp_path, [("img/0.png", caption), ("img/1.png", "a dog")])
    ds = CsvPairs(str(path), image_size=8)
    assert ds.caption(0) == caption.strip() and ds.caption(1) == "a dog"


def test_a_quote_left_open_is_an_error_naming_its_line(tmp_path):
    rows = "".join(f"img/{i % 2}.png,caption {i}\n" for i in range(1500))
    path = _write_bytes(tmp_path, f'image,caption\nimg/0.png,"an open quote\n{rows}'.encode())
    with pytest.raises(DataError, match=r"line 2: a quoted field runs on over \d+ lines \(a quote left open\?\)"):
        CsvPairs(str(path), image_size=8)


@pytest.mark.parametrize("outside", ["../img/0.png", "img/../../img/0.png", "ABS"])
def test_image_paths_outside_the_csv_folder_are_bad_rows_unless_allowed(tmp_path, outside):
    data = tmp_path / "data"
    data.mkdir()
    path = _write(tmp_path, [("img/0.png", "a cat")])  # tmp_path/img/{0,1,2}.png
    outside = str(tmp_path / "img" / "1.png") if outside == "ABS" else outside
    csv_path = data / "train.csv"
    csv_path.write_text(f"image,caption\n{outside},a dog\n")
    (data / "img").mkdir()
    Image.new("RGB", (8, 8)).save(data / "img" / "0.png")
    with pytest.raises(DataError, match=r"train\.csv: line 2: image path .* is outside the CSV's folder .*"
                                        r"set data\.train\.allow_outside_paths=true to read it"):
        CsvPairs(str(csv_path), image_size=8)
    with pytest.raises(DataError, match="no usable rows"):
        CsvPairs(str(csv_path), image_size=8, on_error="skip")
    ds = CsvPairs(str(csv_path), image_size=8, allow_outside_paths=True)
    images, keep = ds.load_images([0])
    assert keep.all() and len(ds) == 1
    assert path.is_file()


def test_paths_that_only_look_like_climbing_out_stay_inside(tmp_path):
    (tmp_path / "..img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "..img" / "0.png")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "0.png")
    path = tmp_path / "train.csv"
    path.write_text("image,caption\n..img/0.png,a cat\nimg/./sub/../0.png,a dog\n")
    (tmp_path / "img" / "sub").mkdir()
    assert len(CsvPairs(str(path), image_size=8)) == 2


def test_labels_csv_refuses_outside_paths_and_bytes_that_are_not_utf8(tmp_path):
    _write(tmp_path, [], header=("image", "label"), name="unused.csv")
    path = tmp_path / "labels.csv"
    path.write_text(f"image,label\n{tmp_path / 'img' / '0.png'},0\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 2: image path .* outside the CSV's folder.*"
                                        r"data\.eval\.allow_outside_paths=true"):
        LabelsCsvClassification(str(path), classnames=["cat"], templates=["a {}."])
    assert len(LabelsCsvClassification(str(path), classnames=["cat"], templates=["a {}."],
                                       allow_outside_paths=True)) == 1
    path.write_bytes(b"image,label\nimg/0.png,0\nimg/\xff.png,0\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 3: not valid UTF-8 \(byte 0xff\)"):
        LabelsCsvClassification(str(path), classnames=["cat"], templates=["a {}."])


@pytest.mark.parametrize("delimiter", [";;", "", '"', "\n"])
def test_a_delimiter_that_is_not_one_character_names_the_field(tmp_path, delimiter):
    from clipbackdoor.registry import ConfigError

    path = _write(tmp_path, [("img/0.png", "a cat")])
    with pytest.raises(ConfigError, match=r"data\.train\.delimiter: must be one character"):
        CsvPairs(str(path), delimiter=delimiter)
    with pytest.raises(ConfigError, match=r"data\.eval\.delimiter: must be one character"):
        LabelsCsvClassification(str(path), classnames=["cat"], templates=["a {}."], delimiter=delimiter)
