"""``clipbackdoor data check``: its report and its exit status (0 clean, 1 would skip, 2 cannot build)."""

from PIL import Image

from clipbackdoor.cli import main

SMALL_EVAL = ["data.eval.num_samples=20"]


def _csv(tmp_path, lines):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 70, 0, 0)).save(tmp_path / "img" / f"{i}.png")
    path = tmp_path / "train.csv"
    path.write_text("image,caption\n" + "".join(line + "\n" for line in lines))
    return ["data.train.name=csv", f"data.train.path={path}"]


def test_clean_data_exits_0(tmp_path, capsys):
    train = _csv(tmp_path, ["img/0.png,a cat", "img/1.png,a dog"])
    assert main(["data", "check", *train, *SMALL_EVAL]) == 0
    out = capsys.readouterr().out
    assert "data.train (csv)" in out and "data.eval (synthetic)" in out and "data.validation: not configured" in out
    assert "usable              2" in out


def test_rows_that_would_be_skipped_exit_1_with_reasons_and_examples(tmp_path, capsys):
    # on_error=raise in the config is overridden: the check counts every problem instead of stopping.
    train = _csv(tmp_path, ["img/0.png,a cat", "img/7.png,a dog", "img/8.png,a cow", "img/1.png,!!"])
    assert main(["data", "check", "--split", "train", *train, "data.train.on_error=raise"]) == 1
    out = capsys.readouterr().out
    assert "data.eval" not in out
    assert "rows                4" in out and "usable              1" in out
    assert "2  image file not found" in out and "1  caption without letters" in out
    assert "train.csv: line 3: image file not found" in out and "line 5: caption without letters '!!'" in out


def test_decode_finds_corrupt_images(tmp_path, capsys):
    train = _csv(tmp_path, ["img/0.png,a cat", "img/1.png,a dog"])
    (tmp_path / "img" / "1.png").write_bytes(b"not an image")
    assert main(["data", "check", "--split", "train", *train]) == 0
    assert main(["data", "check", "--split", "train", "--decode", "--workers", "2", *train]) == 1
    out = capsys.readouterr().out
    assert "1  unreadable image" in out and "line 3: cannot read image" in out


def test_eval_imagefolder_and_validation_split(tmp_path, capsys):
    for cls in ("apple", "banana"):
        (tmp_path / "eval" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "eval" / cls / "x.png")
    (tmp_path / "eval" / "banana" / "y.jpg").write_bytes(b"")
    args = ["data.eval.name=imagefolder", f"data.eval.path={tmp_path / 'eval'}",
            "data.validation.name=synthetic", "data.validation.num_samples=8"]
    assert main(["data", "check", "--split", "validation", *args]) == 0
    assert main(["data", "check", "--split", "eval", "--decode", *args]) == 1
    out = capsys.readouterr().out
    assert "data.validation (synthetic)" in out and "data.eval (imagefolder)" in out
    assert "banana/y.jpg" in out


def test_a_dataset_that_cannot_be_built_exits_2_and_the_others_are_still_checked(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("path,text\nimg/0.png,a cat\n")
    args = ["data.train.name=csv", f"data.train.path={tmp_path / 'train.csv'}", *SMALL_EVAL]
    assert main(["data", "check", *args]) == 2
    out = capsys.readouterr().out
    assert "data.train: error:" in out and "missing column(s) 'image', 'caption'" in out
    assert "data.eval (synthetic)" in out


def test_config_errors_exit_2(tmp_path, capsys):
    assert main(["data", "check", "--split", "train", "data.train.bogus=1"]) == 2
    assert "unknown key(s) 'bogus'" in capsys.readouterr().out


def test_bytes_that_are_not_utf8_are_counted_by_the_check_and_named_by_a_run(tmp_path, capsys):
    train = _csv(tmp_path, ["img/0.png,a cat", "img/1.png,a dog"])
    path = tmp_path / "train.csv"
    path.write_bytes(path.read_bytes() + b"img/2.png,un caf\xe9\n")
    assert main(["data", "check", "--split", "train", *train]) == 1
    out = capsys.readouterr().out
    assert "1  not valid UTF-8" in out and "train.csv: line 4: not valid UTF-8 (byte 0xe9)" in out
    tiny = ["model.name=tiny-vit", "train.epochs=1", "train.batch_size=2", *SMALL_EVAL, "train.progress=false"]
    assert main(["pretrain", "--out", str(tmp_path / "run"), *train, *tiny]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clipbackdoor pretrain: error: {path}: line 4: not valid UTF-8 (byte 0xe9); save the file as UTF-8"]
