"""Two CPU processes under torchrun (gloo) against one process on the same global batch.

These launch real process groups: the gather of embeddings, the gradient scaling that makes DDP's average
exact, the per-rank slices of the seeded global batch, the views drawn for a rank's rows and the sharded
evaluation are all exercised as in a GPU job, only with gloo instead of NCCL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipbackdoor.config import load_config
from clipbackdoor.distributed import DistContext
from clipbackdoor.io import read_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from ddp_step import one_step  # noqa: E402

# tiny-vit has no batch norm: with it, a rank's forward pass is exactly the matching rows of the global
# one (tiny-clip's ResNet would normalise each rank's rows with their own batch statistics).
BASE = ["model.name=tiny-vit", "train.device=cpu", "train.threads=1", "train.progress=false",
        "train.batch_size=32", "train.warmup_steps=1", "data.train.num_samples=96", "data.eval.num_samples=60",
        "eval.batch_size=30", "poison.budget=0.1"]
SSL = ["objective.inmodal_weight=1.0"]
# SigLIP with its own learnable bias: a parameter outside the model, which DDP does not average.
SIGLIP = ["objective.clip_weight=0", "objective.siglip_weight=1", "objective.siglip.bias=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("objective", [[], SSL, SIGLIP], ids=["mmcl", "mmcl-ssl", "siglip-bias"])
def test_two_gloo_ranks_take_the_single_process_step(tmp_path, objective):
    overrides = BASE + objective
    torchrun([str(Path(__file__).parent / "ddp_step.py"), str(tmp_path), *overrides], cwd=tmp_path)
    torch.set_num_threads(1)
    single = one_step(load_config(None, overrides), tmp_path / "single", DistContext())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["rows"] for r in ranks] == [16, 16] and single["rows"] == 32
    for rank in ranks:
        # Every rank computes the loss of the whole global batch...
        for name, value in single["losses"].items():
            assert rank["losses"][name] == pytest.approx(value, rel=1e-5), name
        # ...and after DDP's average every parameter has the single process's gradient, the encoders'
        # included (the original code's would be half of it here).
        assert rank["grads"].keys() == single["grads"].keys()
        assert ("objective.terms.siglip.logit_bias" in single["grads"]) == (objective == SIGLIP)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_torchrun_pretrain_writes_one_run_like_a_single_process(tmp_path):
    overrides = [*BASE, "train.epochs=1", "train.log_every=1"]
    torchrun(["-m", "clipbackdoor", "pretrain", "--out", str(tmp_path / "ddp"), *overrides], cwd=tmp_path)
    from clipbackdoor.cli import main

    assert main(["pretrain", "--out", str(tmp_path / "single"), *overrides]) == 0
    ddp, single = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("ddp", "single"))
    # Rank 0 alone writes: one record per event, in the single run's order.
    assert [(r["kind"], r["step"]) for r in ddp] == [(r["kind"], r["step"]) for r in single]
    data = ddp[0]
    assert data["kind"] == "data" and data["world_size"] == 2 and data["poisoned_pairs"] == 10
    for a, b in zip(ddp, single):
        if a["kind"] == "train":
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
            assert a["poisoned_in_batch"] == b["poisoned_in_batch"]
        if a["kind"] == "eval":
            # Each rank scored half of the images; the summed counts give the single run's metrics.
            assert a["eval_images"] == b["eval_images"] == 60
            for key in ("zeroshot_top1", "asr_top1", "clean_target_rate"):
                assert a[key] == pytest.approx(b[key], abs=1 / 30), key
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "complete"
    assert (tmp_path / "ddp" / "poison_manifest.json").read_text() == \
        (tmp_path / "single" / "poison_manifest.json").read_text()


def test_torchrun_cleaning_applies_a_start_hook_identically_on_every_rank(tmp_path):
    # shrink_perturb's fresh model comes from the run's seed: two ranks must start training from the weights
    # one process starts from, or DDP would average gradients of different models.
    from safetensors.torch import load_file

    from clipbackdoor.cli import main

    tiny = [o for o in BASE if o != "poison.budget=0.1"] + ["train.epochs=1", "train.log_every=1"]
    assert main(["pretrain", "--out", str(tmp_path / "src"), *tiny, "poison.budget=0.1"]) == 0
    clean = ["clean", "--from", str(tmp_path / "src"), "--defense", "shrink_perturb", "defense.perturb=0.5",
             *tiny, "data.train.num_samples=64"]
    torchrun(["-m", "clipbackdoor", *clean, "--out", str(tmp_path / "ddp")], cwd=tmp_path)
    assert main([*clean, "--out", str(tmp_path / "single")]) == 0
    ddp, single = (load_file(tmp_path / d / "checkpoints" / "epoch_0.safetensors") for d in ("ddp", "single"))
    assert ddp.keys() == single.keys()
    for key, value in single.items():
        assert torch.equal(ddp[key], value), key
    # ...and take the same first step from them (Adam's later steps amplify rounding in tiny gradients).
    first = [next(r["loss"] for r in read_jsonl(tmp_path / d / "metrics.jsonl") if r["kind"] == "train")
             for d in ("ddp", "single")]
    assert first[0] == pytest.approx(first[1], rel=1e-4)
