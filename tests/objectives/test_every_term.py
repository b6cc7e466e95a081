"""One epoch of the real training loop for every registered objective term, alone, with its default options.

A term that cannot train on its own with its defaults (a missing option, a key the loop does not provide, a
parameter that never reaches the optimizer or the training state) fails here rather than in someone's run.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

import clipbackdoor.train.loop as loop
from clipbackdoor.config import load_config
from clipbackdoor.io import read_jsonl
from clipbackdoor.objectives import OBJECTIVES
from clipbackdoor.train.checkpoint import load_state

TINY = [
    "data.train.num_samples=256", "data.eval.num_samples=60", "train.batch_size=64", "train.epochs=1",
    "train.warmup_steps=1", "train.log_every=1", "train.progress=false", "train.threads=1",
    "poison.budget=0.1", "attack.patch_size=4", "eval.batch_size=60",
]


def _alone(name: str) -> list[str]:
    """Overrides that train ``name`` alone: its weight 1, the default config's terms off."""
    weights = {"clip": 0, "inmodal": 0, name: 1}
    return [f"objective.{term}_weight={w}" for term, w in weights.items()]


def _train(tmp_path, monkeypatch, overrides):
    """Run one epoch; return the objective the trainer built and its state right after it was built."""
    built = []

    def recording(*args, **kwargs):
        objective = real(*args, **kwargs)
        built.append((objective, {k: v.detach().clone() for k, v in objective.state_dict().items()}))
        return objective

    real = loop.build_objective
    monkeypatch.setattr(loop, "build_objective", recording)
    loop.run_training(load_config(None, overrides), tmp_path)
    assert len(built) == 1
    return built[0]


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_one_epoch_with_the_term_alone(tmp_path, monkeypatch, name):
    objective, init = _train(tmp_path, monkeypatch, [*TINY, *_alone(name)])
    assert set(objective.terms) == {name}

    train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(train) == 4  # 256 // 64 steps, every one logged
    for record in train:
        assert f"{name}_loss" in record
        assert math.isfinite(record["loss"]) and math.isfinite(record[f"{name}_loss"])

    checkpoints = tmp_path / "checkpoints"
    before, after = load_file(checkpoints / "epoch_0.safetensors"), load_file(checkpoints / "epoch_1.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no model weight changed"

    # The term's own parameters and buffers are saved with the training state, under the keys a freshly built
    # objective has (a run resumed inside an epoch loads them before any start_epoch), and its trainable
    # parameters are trained.
    state = load_state(checkpoints / "last.pt")
    assert state["objective"].keys() == init.keys()
    for key, param in objective.named_parameters():
        if param.requires_grad:
            assert not torch.equal(state["objective"][key], init[key]), f"{key} did not move from its init"


def test_siglip_bias_is_trained_and_saved(tmp_path, monkeypatch):
    _, init = _train(tmp_path, monkeypatch, [*TINY, *_alone("siglip"), "objective.siglip.bias=true"])
    assert list(init) == ["terms.siglip.logit_bias"] and init["terms.siglip.logit_bias"].item() == -10.0
    state = load_state(tmp_path / "checkpoints" / "last.pt")
    bias = state["objective"]["terms.siglip.logit_bias"]
    assert bias.shape == () and torch.isfinite(bias)
    assert bias.item() != -10.0  # trained away from its init
    train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert all(math.isfinite(r["siglip_loss"]) for r in train)
