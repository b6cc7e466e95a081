"""Pre-training and cleaning from WebDataset shards through the command line, on tiny runs."""

import io
import json
import tarfile

from clipbackdoor.cli import main
from clipbackdoor.io import read_jsonl

TINY = ["data.eval.num_samples=100", "train.batch_size=64", "train.epochs=1", "train.warmup_steps=1",
        "train.progress=false", "eval.batch_size=100"]


def _shards(out, n, split="train", per_shard=32):
    assert main(["synthetic", "--format", "webdataset", "--out", str(out), "-n", str(n), "--split", split,
                 "--samples-per-shard", str(per_shard)]) == 0
    return ["data.train.name=webdataset", f"data.train.urls={out}"]


def test_pretrain_clean_evaluate_from_shards(tmp_path, capsys):
    train = _shards(tmp_path / "train", 256)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"shard-{i:06d}.tar" for i in range(8)]
    assert "wrote 256 pairs in 8 shards" in capsys.readouterr().out
    assert main(["pretrain", "--config", "mmcl", "--out", str(tmp_path / "run"), *TINY, *train,
                 "poison.budget=8", "data.num_workers=2"]) == 0
    manifest = json.loads((tmp_path / "run" / "poison_manifest.json").read_text())
    assert manifest["num_poisoned"] == 8 and manifest["dataset"]["name"] == "webdataset"
    assert all(s["id"].startswith("shard-") and "/" in s["id"] for s in manifest["samples"])
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["kind"] for r in records].count("eval") == 2
    assert next(r for r in records if r["kind"] == "epoch")["step"] == 4  # 256 // 64 batches

    clean = _shards(tmp_path / "clean", 128, split="clean")
    assert main(["clean", "--from", str(tmp_path / "run"), "--defense", "cleanclip",
                 "--out", str(tmp_path / "clean_run"),
                 "train.epochs=1", "train.progress=false", "train.batch_size=64", *clean]) == 0
    assert "webdataset" in (tmp_path / "clean_run" / "config.yaml").read_text()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "clean_run"), "--out", str(tmp_path / "eval"),
                 "eval.asr_draws=2"]) == 0
    assert "zeroshot_top1" in capsys.readouterr().out


def _add_bad_shard(folder):
    """A shard with two good samples, one with an empty caption and one whose PNG is garbage."""
    good = next(folder.glob("*.tar"))
    with tarfile.open(good) as tar:
        png = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".png"))).read()
    members = [("x1.png", png), ("x1.txt", b"a red apple"), ("x2.png", png), ("x2.txt", b""),
               ("x3.png", b"garbage"), ("x3.txt", b"a blue car"), ("x4.png", png), ("x4.txt", b"a cat")]
    with tarfile.open(folder / "zz-bad.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_skip_mode_completes_and_records_what_was_skipped(tmp_path, capsys):
    train = _shards(tmp_path / "train", 124, per_shard=31)  # 4 shards + the bad one: 127 usable, 1 batch
    _add_bad_shard(tmp_path / "train")
    assert main(["pretrain", "--config", "mmcl", "--out", str(tmp_path / "strict"), *TINY, *train]) == 2
    assert "zz-bad.tar: sample 'x2': empty caption" in capsys.readouterr().err

    assert main(["pretrain", "--config", "mmcl", "--out", str(tmp_path / "run"), *TINY, *train,
                 "data.train.on_error=skip", "train.batch_size=127"]) == 0
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    data = next(r for r in records if r["kind"] == "data")
    assert data["rows"] == 127 and data["skipped"] == {"empty caption": 1} and data["skipped_rows"] == 1
    # The garbage PNG is found while training: one epoch of one batch holding every usable sample.
    assert next(r for r in records if r["kind"] == "epoch")["dropped_rows"] == 1
