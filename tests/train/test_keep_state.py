"""Runs that keep only their final weights (train.keep_last_state=false) and log a validation loss: what a
sweep's cleaning runs do to stay small, and what every later stage must still be able to read."""

import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import clipbackdoor.train.checkpoint as ckpt
import clipbackdoor.train.loop as loop
from clipbackdoor.cli import main
from clipbackdoor.config import load_config
from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.io import read_jsonl
from clipbackdoor.models import create_model
from clipbackdoor.models.weights import read_weights, save_weights
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import LAST, epoch_weights_name, latest_weights
from clipbackdoor.train.loop import run_training
from clipbackdoor.train.validation import ValidationLoss

EPOCHS = 2
TINY = ["data.train.num_samples=256", "data.eval.num_samples=100", "train.batch_size=64", f"train.epochs={EPOCHS}",
        "train.warmup_steps=1", "train.progress=false", "train.threads=1", "eval.batch_size=100"]
LEAN = ["data.validation.name=synthetic", "data.validation.split=val", "data.validation.num_samples=64",
        "train.keep_last_state=false", "train.keep_epoch_checkpoints=false"]


def lean_config():
    return load_config("mmcl", [*TINY, *LEAN])


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    # train.threads=1 sets the thread count of the whole process; later test files must not inherit it.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lean_run(tmp_path_factory):
    """One tiny pre-training run that keeps no training state, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("lean")
    return run_dir, run_training(lean_config(), run_dir)


def test_every_evaluation_logs_a_finite_validation_loss(lean_run):
    run_dir, summary = lean_run
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == list(range(EPOCHS + 1))
    assert all(math.isfinite(r["val_loss"]) for r in evals)
    # Training on the same distribution must lower the held-out loss; a constant would mean it is computed
    # from stale weights.
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert summary["final"]["val_loss"] == evals[-1]["val_loss"]


def test_only_the_final_weights_remain_and_they_are_the_evaluated_model(lean_run):
    run_dir, _ = lean_run
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"epoch_{EPOCHS}.safetensors"]
    # The kept file must hold the model whose metrics were logged last, not an earlier one: recompute the
    # logged validation loss from it.
    model = create_model("tiny-clip").model
    model.load_state_dict(load_file(run_dir / "checkpoints" / f"epoch_{EPOCHS}.safetensors"))
    pairs = SyntheticPairs(num_samples=64, split="val", experiment_seed=lean_config().seed, image_size=32)
    val_loss = ValidationLoss(pairs, create_model("tiny-clip").tokenizer, batch_size=100)(model)
    last = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert val_loss == pytest.approx(last["val_loss"], abs=2e-5)


def test_a_run_without_last_state_can_be_cleaned(lean_run, tmp_path, capsys):
    # `clean --from RUN` must find the final weights when last.pt is gone, or a sweep could never clean the
    # models it pre-trained with keep_last_state=false.
    run_dir, summary = lean_run
    out = tmp_path / "clean"
    assert main(["clean", "--from", str(run_dir), "--defense", "mmcl", "--out", str(out), "train.epochs=1",
                 "data.train.num_samples=128", "train.batch_size=64", "train.progress=false", "train.threads=1",
                 "eval.batch_size=100"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    # Before its first step the cleaning run evaluates exactly the source's final model.
    start = next(r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval")
    for key in ("zeroshot_top1", "asr_top1", "clean_target_rate"):
        assert start[key] == summary["final"][key], key


def test_a_completed_run_is_not_trained_again(lean_run, monkeypatch):
    # Without last.pt there is nothing to resume from; a finished run must be recognised by its summary,
    # not retrained from scratch into the same directory.
    run_dir, summary = lean_run

    def no_training(*args, **kwargs):
        raise AssertionError("a completed run was trained again")

    monkeypatch.setattr(loop, "Trainer", no_training)
    assert run_training(lean_config(), run_dir) == summary


def test_last_state_is_kept_by_default(tmp_path):
    # keep_last_state defaults to true: deleting the resumable state must be an explicit choice.
    overrides = [o for o in TINY if not o.startswith("train.epochs=")]
    run_training(load_config("mmcl", [*overrides, "train.epochs=1", "train.keep_epoch_checkpoints=false"]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]


# -- latest_weights -------------------------------------------------------------------------------------


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((2,), float(value)))


def test_latest_weights_orders_epochs_numerically(tmp_path):
    # Sorted as strings, epoch_9 would come after epoch_10 and a 10-epoch run would be cleaned from epoch 9.
    folder = tmp_path / "checkpoints"
    for epoch in (2, 9, 10):
        save_weights(folder / epoch_weights_name(epoch), _Const(epoch))
    assert latest_weights(tmp_path) == folder / "epoch_10.safetensors"
    assert read_weights(tmp_path)["w"].tolist() == [10.0, 10.0]


def test_latest_weights_prefers_the_training_state(tmp_path):
    # An unfinished run keeps last.pt, which is newer than any epoch file (it is also written mid-epoch).
    folder = tmp_path / "checkpoints"
    save_weights(folder / epoch_weights_name(3), _Const(3))
    ckpt.save_state(folder / LAST, {"model": _Const(7).state_dict()})
    assert latest_weights(tmp_path) == folder / LAST
    assert read_weights(tmp_path)["w"].tolist() == [7.0, 7.0]


@pytest.mark.parametrize("make_folder", [False, True])
def test_latest_weights_of_a_run_without_checkpoints_is_a_config_error(tmp_path, make_folder):
    # A ConfigError becomes a one-line CLI message; anything else would be a traceback.
    if make_folder:
        (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        latest_weights(tmp_path)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        read_weights(tmp_path)


# -- file permissions -----------------------------------------------------------------------------------

# io.py reads the umask once, at import (reading it means setting it, which is not thread-safe), so the
# umask that counts is the one the process had when it imported clipbackdoor. Each check therefore runs in
# a fresh interpreter started under the umask in question.
PROBE = """
import os, sys
from clipbackdoor.io import atomic_write_text
atomic_write_text(sys.argv[1], "x")
with open(sys.argv[2], "w") as f:
    f.write("x")
print(oct(os.stat(sys.argv[1]).st_mode & 0o777), oct(os.stat(sys.argv[2]).st_mode & 0o777))
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o022, "0o644"), (0o077, "0o600")], ids=["022", "077"])
def test_atomic_write_gives_the_permissions_of_an_ordinary_write(tmp_path, umask, mode):
    # mkstemp makes files 0600: results written that way could not be read by the rest of a team sharing
    # the run folder. The second umask shows the mode follows the umask rather than being fixed at 0644.
    previous = os.umask(umask)
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "atomic.txt"), str(tmp_path / "plain.txt")],
                             capture_output=True, text=True, check=True).stdout.split()
    finally:
        os.umask(previous)
    assert out == [mode, mode]
