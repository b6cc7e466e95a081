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
