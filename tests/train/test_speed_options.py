"""GPU speed settings change how a step runs, not what it computes (checked on the CPU).

channels_last only changes the memory layout of the convolutional tower's activations; bf16 autocast
rounds the forward pass but the losses stay in fp32; torch.compile fuses kernels. Each must give the
default step's loss to within its numerical precision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from clipbackdoor.config import load_config
from clipbackdoor.distributed import DistContext

sys.path.insert(0, str(Path(__file__).parent))
from ddp_step import one_step  # noqa: E402

BASE = ["train.device=cpu", "train.batch_size=32", "data.train.num_samples=64", "data.eval.num_samples=20",
        "eval.batch_size=20", "poison.budget=0.1", "train.progress=false"]


def _loss(tmp_path, *extra):
    torch.manual_seed(0)
    return one_step(load_config(None, [*BASE, *extra]), tmp_path / "-".join(extra or ("base",)), DistContext())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _loss(tmp_path_factory.mktemp("base"))


def test_channels_last_computes_the_same_step(tmp_path, baseline):
    result = _loss(tmp_path, "train.channels_last=true")
    assert result["losses"]["loss"] == pytest.approx(baseline["losses"]["loss"], rel=1e-5)
    for name, grad in baseline["grads"].items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_keeps_the_loss_in_fp32(tmp_path, baseline):
    result = _loss(tmp_path, "train.precision=bf16")
    # bf16 keeps ~3 significant digits in the towers; the InfoNCE on fp32 features stays close.
    assert result["losses"]["loss"] == pytest.approx(baseline["losses"]["loss"], rel=2e-2)
    assert all(g.dtype == torch.float32 for g in result["grads"].values())


@pytest.mark.slow
def test_compiled_model_computes_the_same_step(tmp_path, baseline):
    result = _loss(tmp_path, "train.compile=true")
    assert result["losses"]["loss"] == pytest.approx(baseline["losses"]["loss"], rel=1e-4)
