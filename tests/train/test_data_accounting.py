"""Bad rows in the training data are counted in the run's metrics, not lost silently.

A row the index rejects (missing image, empty caption) is reported once in the run's ``data`` record; a
row whose image turns out to be corrupt only when its batch is loaded is dropped from that batch and
counted in its epoch's ``dropped_rows``, including across an interruption.
"""

from __future__ import annotations

import csv

import pytest

from clipbackdoor.config import load_config
from clipbackdoor.data.synthetic import generate
from clipbackdoor.data.synthetic.io import write_csv_dataset
from clipbackdoor.io import read_jsonl
from clipbackdoor.train.loop import run_training


@pytest.fixture
def dirty_csv(tmp_path):
    path = write_csv_dataset(generate(96, seed=0, image_size=32), tmp_path / "data")
    rows = list(csv.reader(open(path)))
    # Two images that exist but are not images, one that is gone, one caption with no words.
    for r in (5, 40):
        (path.parent / rows[r][0]).write_bytes(b"not a png")
    (path.parent / rows[7][0]).unlink()
    rows[9][1] = "1234"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _config(path, *extra):
    return load_config(None, ["data.train.name=csv", f"data.train.path={path}", "data.train.on_error=skip",
                              "data.eval.num_samples=40", "eval.batch_size=40", "train.batch_size=16",
                              "train.epochs=2", "train.progress=false", "train.warmup_steps=1", *extra])


def test_skipped_and_dropped_rows_appear_in_the_metrics(tmp_path, dirty_csv):
    run_training(_config(dirty_csv), tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    data = [r for r in records if r["kind"] == "data"]
    assert len(data) == 1
    assert data[0]["rows"] == 94 and data[0]["skipped_rows"] == 2
    assert sum(data[0]["skipped"].values()) == 2
    epochs = [r for r in records if r["kind"] == "epoch"]
    # 94 rows give 5 batches of 16 (14 rows never drawn): a corrupt image is dropped when it is drawn.
    assert len(epochs) == 2 and all(0 <= e["dropped_rows"] <= 2 for e in epochs)
    assert sum(e["dropped_rows"] for e in epochs) >= 1


def test_dropped_rows_survive_a_resume(tmp_path, dirty_csv):
    # Checkpoint after every step and stop mid-epoch: the resumed run reports the same counts.
    whole = tmp_path / "whole"
    run_training(_config(dirty_csv), whole)
    cut = tmp_path / "cut"
    cfg = _config(dirty_csv, "train.checkpoint_every_steps=1")
    from clipbackdoor.train import loop

    calls = {"n": 0}
    original = loop.Trainer.step

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, batch)

    loop.Trainer.step = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, cut)
    finally:
        loop.Trainer.step = original
    run_training(cfg, cut)

    def counts(run):
        return [(r["epoch"], r["dropped_rows"]) for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "epoch"]

    assert counts(cut) == counts(whole)
