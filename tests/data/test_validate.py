"""``validate()`` reports, the threaded file checks, and the packed CSV index behind them."""

import numpy as np
import pytest
from PIL import Image

from clipbackdoor.data.datasets import CsvPairs
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import DATASETS
from clipbackdoor.data.strings import PackedStrings
from clipbackdoor.data.validate import MAX_EXAMPLES, build_for_check, map_chunked
from clipbackdoor.registry import ConfigError


def _csv(tmp_path, lines, n_images=3):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(n_images):
        Image.new("RGB", (20, 20), (i * 60, 10, 10)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / "train.csv"
    path.write_text("image,caption\n" + "".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("workers", [1, 4])
def test_map_chunked_keeps_order_and_raises_after_earlier_items(workers):
    assert list(map_chunked(lambda x: x * x, range(1000), workers, chunk=7)) == [x * x for x in range(1000)]

    def items():
        yield from range(20)
        raise ValueError("bad item")

    seen = []
    with pytest.raises(ValueError, match="bad item"):
        for x in map_chunked(str, items(), workers, chunk=3):
            seen.append(x)
    assert seen == [str(i) for i in range(20)]


def test_skip_reasons_are_grouped_and_examples_name_the_line(tmp_path):
    path = _csv(tmp_path, ["img/0.png,a cat", "img/9.png,a dog", "img/1.png,1234", "img/2.png,5678", ",a cow"])
    ds = CsvPairs(str(path), on_error="skip")
    assert isinstance(ds.files, PackedStrings) and isinstance(ds.captions, PackedStrings)
    assert ds.lines.dtype == np.int64 and ds.lines.tolist() == [2]
    assert dict(ds.skipped) == {"image file not found": 1, "caption without letters": 2, "empty image path": 1}
    result = ds.validate()
    assert result["rows"] == 5 and result["usable"] == 1 and result["skipped"] == dict(ds.skipped)
    assert result["examples"] == [
        f"{path}: line 3: image file not found: {tmp_path / 'img/9.png'}",
        f"{path}: line 4: caption without letters '1234'",
        f"{path}: line 5: caption without letters '5678'",
        f"{path}: line 6: empty image path",
    ]


def test_examples_are_capped(tmp_path):
    path = _csv(tmp_path, ["img/0.png,a cat"] + [f"img/x{i}.png,a dog" for i in range(50)])
    result = CsvPairs(str(path), on_error="skip", check_threads=4).validate()
    assert result["skipped"] == {"image file not found": 50} and len(result["examples"]) == MAX_EXAMPLES
    assert "line 3:" in result["examples"][0] and "line 22:" in result["examples"][-1]


@pytest.mark.parametrize("threads", [1, 4])
def test_first_problem_in_file_order_is_raised(tmp_path, threads):
    # A missing file (line 3) comes before a ragged row (line 4): the missing file is the error reported,
    # whatever number of threads stat the files ahead of the reader.
    path = _csv(tmp_path, ["img/0.png,a cat", "img/9.png,a dog", "img/1.png,a cow,extra"])
    with pytest.raises(DataError, match=r"line 3: image file not found"):
        CsvPairs(str(path), check_threads=threads)
    with pytest.raises(DataError, match=r"line 4: expected 2 fields"):
        CsvPairs(str(path), on_error="skip", check_threads=threads)


def test_unchecked_files_are_checked_by_validate_and_decode_finds_corrupt_ones(tmp_path):
    path = _csv(tmp_path, ["img/0.png,a cat", "img/9.png,a dog", "img/1.png,a cow"])
    (tmp_path / "img" / "1.png").write_bytes(b"\x89PNG broken")
    ds = CsvPairs(str(path), check_files=False)
    assert len(ds) == 3
    assert ds.validate()["skipped"] == {"image file not found": 1}
    result = ds.validate(decode=True, workers=3)
    assert result["skipped"] == {"image file not found": 1, "unreadable image": 1} and result["usable"] == 1
    assert result["examples"][1].startswith(f"{path}: line 4: cannot read image")


def test_no_usable_rows_says_why(tmp_path):
    path = _csv(tmp_path, ["img/0.png,", "img/1.png,42"])
    with pytest.raises(DataError, match=r"no usable rows \(skipped: .*'empty caption': 1"):
        CsvPairs(str(path), on_error="skip")


def test_where_comes_from_the_config_path(tmp_path):
    path = _csv(tmp_path, ["img/0.png,a cat"])
    with pytest.raises(ConfigError, match=r"^data\.validation\.on_error"):
        DATASETS.build({"name": "csv", "path": str(path), "on_error": "ignore"}, "data.validation")


def test_build_for_check_forces_skip_only_where_supported(tmp_path):
    path = _csv(tmp_path, ["img/0.png,a cat", "img/9.png,a dog"])
    ds = build_for_check(DATASETS, {"name": "csv", "path": str(path), "on_error": "raise"}, "data.train")
    assert ds.on_error == "skip" and ds.validate()["usable"] == 1
    synthetic = build_for_check(DATASETS, {"name": "synthetic", "num_samples": 4}, "data.train")
    assert synthetic.validate() == {"rows": 4, "usable": 4, "skipped": {}, "examples": []}
