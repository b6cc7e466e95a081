"""``clipbackdoor optimize-patch`` end to end on a tiny pre-training run, and the patch as an attack."""

import json

import numpy as np
import pytest
from PIL import Image

from clipbackdoor.cli import main

TINY = ["data.train.num_samples=64", "data.eval.num_samples=60", "train.batch_size=32", "train.epochs=1",
        "train.warmup_steps=1", "train.progress=false", "eval.batch_size=60", "eval.every_epoch=false"]
FAST = ["--steps", "2", "--images", "16", "--batch-size", "8", "--patch-size", "6"]


# Tiny models: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    path = tmp_path_factory.mktemp("optimize") / "run"
    assert main(["pretrain", "--out", str(path), *TINY]) == 0
    return path


def test_writes_a_png_that_serves_as_an_attack(run_dir, tmp_path, capsys):
    out = tmp_path / "patch.png"
    assert main(["optimize-patch", "--from", str(run_dir), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "random-noise patch (6 px, random)" in printed and "optimised patch (6 px, random)" in printed
    assert printed.count("asr_top1") == 2 and f"attack.path={out}" in printed
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (6, 6) and image.mode == "RGB"
        pixels = np.asarray(image)

    assert main(["evaluate", "--checkpoint", str(run_dir), "--out", str(tmp_path / "eval"),
                 "attack.name=image_patch", f"attack.path={out}"]) == 0
    assert "asr_top1" in capsys.readouterr().out
    # The evaluation's ASR is the one optimize-patch printed for its patch (same triggers, same images).
    final = json.loads((tmp_path / "eval" / "summary.json").read_text())["final"]
    optimised_block = printed.split("optimised patch")[1]
    assert f"asr_top1           {final['asr_top1']:.4f}" in optimised_block
    # A poisoning run built on it stores the patch inline in its manifest.
    assert main(["poison", "--out", str(tmp_path / "poison"), *TINY, "poison.budget=4",
                 "attack.name=image_patch", f"attack.path={out}"]) == 0
    attack = json.loads((tmp_path / "poison" / "poison_manifest.json").read_text())["attack"]
    assert attack["name"] == "image_patch" and attack["side"] == 6 and attack["pixels"]
    assert np.frombuffer(__import__("base64").b64decode(attack["pixels"]), np.uint8).reshape(3, 6, 6).transpose(
        1, 2, 0).tolist() == pixels.tolist()


def test_images_from_the_evaluation_set(run_dir, tmp_path, capsys):
    out = tmp_path / "patch.png"
    assert main(["optimize-patch", "--from", str(run_dir / "checkpoints" / "epoch_1.safetensors"), "--out", str(out),
                 "--images-from", "eval", "--location", "four_corners", "--target", "circle", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "optimised patch (6 px, four_corners)" in printed and "attack.target=circle" in printed
    assert out.is_file()


def test_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["optimize-patch", "--from", str(run_dir), "--out", str(tmp_path / "p.jpg"), *FAST]) == 2
    assert "name it *.png" in capsys.readouterr().err
    assert main(["optimize-patch", "--from", str(run_dir), "--out", str(tmp_path / "p.png"), "--target", "zebra",
                 *FAST]) == 2
    assert "'zebra' is not a class of the evaluation set" in capsys.readouterr().err
    assert main(["optimize-patch", "--from", str(run_dir), "--out", str(tmp_path / "p.png"), "--epoch", "9",
                 *FAST]) == 2
    assert "--epoch 9" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
