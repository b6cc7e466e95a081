"""The one training loop: run directory contents, resume equivalence, poisoning and cleaning."""

import json

import pytest
import torch
from interrupt import train_until_interrupted
from safetensors.torch import load_file

import clipbackdoor.train.loop as loop
from clipbackdoor.config import load_config
from clipbackdoor.io import read_jsonl
from clipbackdoor.registry import ConfigError
from clipbackdoor.train.loop import run_training

TINY = [
    "data.train.num_samples=384", "data.eval.num_samples=120", "train.batch_size=64", "train.epochs=2",
    "train.warmup_steps=2", "train.log_every=1", "train.progress=false", "train.threads=1",
    "poison.budget=0.1", "attack.patch_size=4", "eval.batch_size=64",
]

# Timing fields differ between any two runs; everything else must be identical.
TIMING = {"samples_per_second", "eval_seconds", "epoch_seconds"}


def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_run_directory_holds_config_metrics_checkpoints_and_manifest(tmp_path):
    summary = run_training(_cfg(), tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "poison_manifest.json", "summary.json"} <= files
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {
        "last.pt", "epoch_0.safetensors", "epoch_1.safetensors", "epoch_2.safetensors"}
    evals = [r for r in _records(tmp_path) if r["kind"] == "eval"]
    # Evaluated before training and after every epoch.
    assert [r["epoch"] for r in evals] == [0, 1, 2]
    for key in ("zeroshot_top1", "zeroshot_top5", "asr_top1", "clean_target_rate"):
        assert 0.0 <= evals[-1][key] <= 1.0
    train = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))  # 384 // 64 = 6 steps per epoch
    epochs = [r for r in _records(tmp_path) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    mean = sum(r["loss"] for r in train[:6]) / 6  # log_every=1: every step's loss is logged
    assert epochs[0]["train_loss"] == pytest.approx(mean, abs=1e-5)
    assert summary["poisoned_pairs"] == 38
    manifest = json.loads((tmp_path / "poison_manifest.json").read_text())
    assert manifest["num_poisoned"] == 38
    # A finished run is returned, not retrained.
    assert run_training(_cfg(), tmp_path) == summary


@pytest.mark.parametrize("objective", [["objective.inmodal_weight=0"], ["objective.inmodal_weight=1"]])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, objective):
    extra = [*objective, "train.checkpoint_every_steps=4"]
    run_training(_cfg(*extra), tmp_path / "straight")
    train_until_interrupted(monkeypatch, _cfg(*extra), tmp_path / "resumed", step=10)
    run_training(_cfg(*extra), tmp_path / "resumed")

    assert _records(tmp_path / "resumed") == _records(tmp_path / "straight")
    a = load_file(tmp_path / "straight" / "checkpoints" / "epoch_2.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "epoch_2.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    cfg = _cfg("train.epochs=1")
    run_training(cfg, tmp_path / "a")
    run_training(cfg, tmp_path / "b")
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert (tmp_path / "a" / "poison_manifest.json").read_text() == (tmp_path / "b" / "poison_manifest.json").read_text()


def test_run_directory_refuses_a_different_config(tmp_path):
    run_training(_cfg("train.epochs=0"), tmp_path)
    with pytest.raises(ConfigError, match="train.lr"):
        run_training(_cfg("train.epochs=0", "train.lr=0.5"), tmp_path)


def test_cleaning_starts_from_the_checkpoint_with_fresh_optimizer(tmp_path):
    run_training(_cfg("train.epochs=1"), tmp_path / "pre")
    pre = [r for r in _records(tmp_path / "pre") if r["kind"] == "eval"][-1]
    clean = _cfg("train.epochs=1", "poison.budget=0", f"init.checkpoint={tmp_path / 'pre'}",
                 "defense.name=cleanclip", "train.weight_decay=0.5")
    assert clean.objective == {"clip_weight": 1.0, "inmodal_weight": 1.0}
    run_training(clean, tmp_path / "clean")
    first = [r for r in _records(tmp_path / "clean") if r["kind"] == "eval"][0]
    # Epoch 0 of cleaning is the pre-trained model itself.
    assert first["zeroshot_top1"] == pre["zeroshot_top1"] and first["asr_top1"] == pre["asr_top1"]
    assert not (tmp_path / "clean" / "poison_manifest.json").exists()
    state = torch.load(tmp_path / "clean" / "checkpoints" / "last.pt", weights_only=True)
    assert {g["weight_decay"] for g in state["optimizer"]["param_groups"]} == {0.0, 0.5}


def test_inherited_optimizer_keeps_pretraining_weight_decay(tmp_path):
    run_training(_cfg("train.epochs=1"), tmp_path / "pre")
    clean = _cfg("train.epochs=1", "poison.budget=0", f"init.checkpoint={tmp_path / 'pre'}",
                 "init.inherit_optimizer=true", "train.weight_decay=0.5")
    run_training(clean, tmp_path / "clean")
    state = torch.load(tmp_path / "clean" / "checkpoints" / "last.pt", weights_only=True)
    # The faithful mode reproduces the original's silent override of the configured weight decay.
    assert {g["weight_decay"] for g in state["optimizer"]["param_groups"]} == {0.0, 0.1}


def test_crash_between_last_checkpoint_and_summary_does_not_duplicate_the_evaluation(tmp_path):
    run_training(_cfg("train.epochs=1"), tmp_path)
    before = _records(tmp_path)
    (tmp_path / "summary.json").unlink()  # as if the process died right after the final checkpoint
    summary = run_training(_cfg("train.epochs=1"), tmp_path)
    assert _records(tmp_path) == before
    assert summary["final"]["epoch"] == 1


def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    real = loop.forward_batch

    def nan_loss(*args, **kwargs):
        losses = real(*args, **kwargs)
        return {**losses, "loss": losses["loss"] * float("nan")}

    monkeypatch.setattr(loop, "forward_batch", nan_loss)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        run_training(_cfg("train.epochs=1"), tmp_path)
    # The epoch-0 state is intact and finite, so the run can resume after the user lowers the lr.
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"] == {"epoch": 0, "batch": 0, "step": 0, "epoch_loss": 0.0, "dropped": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_said_in_the_log(tmp_path, monkeypatch, caplog):
    # Power lost (or the disk full) mid-write: the file ends in half a record. The resumed run must not
    # append its next record to the fragment, and the run's records must equal an uninterrupted run's.
    extra = ["train.checkpoint_every_steps=4"]
    run_training(_cfg(*extra), tmp_path / "straight")
    train_until_interrupted(monkeypatch, _cfg(*extra), tmp_path / "resumed", step=10)
    metrics = tmp_path / "resumed" / "metrics.jsonl"
    with open(metrics, "ab") as f:
        f.write(b'{"kind": "train", "epoch": 2, "step": 10, "lr": 0.00')
    run_training(_cfg(*extra), tmp_path / "resumed")
    assert _records(tmp_path / "resumed") == _records(tmp_path / "straight")
    assert "metrics.jsonl: dropped a torn last line (52 bytes) left by an interrupted write" in caplog.text


def test_a_damaged_metrics_line_stops_a_resume_naming_the_line(tmp_path):
    run_training(_cfg("train.epochs=1"), tmp_path)
    (tmp_path / "summary.json").unlink()
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[2] = "tampered"
    metrics.write_text("\n".join(lines) + "\n")
    from clipbackdoor.errors import DataError

    with pytest.raises(DataError, match=r"metrics\.jsonl: line 3 is not a JSON record"):
        run_training(_cfg("train.epochs=1"), tmp_path)
