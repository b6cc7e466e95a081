"""Data-parallel training on torch.distributed, launched by ``torchrun`` or Slurm's ``srun`` (one node or many).

The library never reads the environment: the CLI builds a ``DistContext`` from torchrun's variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) or, without them, from those of an ``srun`` job step
(``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``), and hands it to the trainer.
``world_size == 1`` is an ordinary single-process run and touches no process group.

What makes a W-process job compute what one process computes on the same global batch:
- every rank takes a contiguous slice of the same seeded global batch (``data.pipeline.EpochBatchSampler``);
- embeddings are gathered rank-major, so the contrastive targets stay ``arange(global batch)``;
- each rank computes the full global-batch loss and back-propagates through its own rows, with their
  gradient scaled by W (``objectives.distributed``), so DDP's gradient average is the exact gradient;
- image views of a rank's rows are the draws a single process makes for those rows.
Batch-norm statistics (RN50) are still per rank unless ``train.sync_batchnorm`` is set (CUDA only).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from clipbackdoor.registry import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistContext:
        """This process's place from ``env`` (the CLI passes ``os.environ``): torchrun's variables when
        there are any (also under ``srun torchrun``), else those of an ``srun`` job step, else one process.

        Slurm's world size is the step's task count, ``SLURM_STEP_NUM_TASKS``, which only ``srun`` sets:
        a batch script or an ``salloc`` shell also has ``SLURM_NTASKS`` (the whole allocation's tasks), and a
        single process started there must not wait for ranks that will never come. A Slurm job of several
        ranks needs ``MASTER_ADDR`` and ``MASTER_PORT`` for the rendezvous (torchrun sets its own).
        """
        if "RANK" in env or "WORLD_SIZE" in env:
            names, launcher = TORCHRUN_VARS, "torchrun"
        elif "SLURM_STEP_NUM_TASKS" in env:
            names, launcher = SLURM_VARS, "srun"
        else:
            return cls()
        rank, world_size, local_rank = (_int_var(env, name, default) for name, default in zip(names, (0, 1, 0)))
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"{names[0]}={rank} is outside {names[1]}={world_size} ({launcher}'s environment)")
        if local_rank < 0:
            raise ConfigError(f"{names[2]}={local_rank}: a local rank is >= 0 ({launcher}'s environment)")
        if launcher == "srun" and world_size > 1:
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if not env.get(name):
                    raise ConfigError(f"{name} is not set: {world_size} srun tasks need it to meet (the scripts "
                                      "of `clipbackdoor sweep --slurm` export MASTER_ADDR and MASTER_PORT)")
            port = _int_var(env, "MASTER_PORT", 0)
            if not 0 < port < 65536:
                raise ConfigError(f"MASTER_PORT={port}: expected a port number 1-65535")
        return cls(rank, world_size, local_rank)


TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SLURM_VARS = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")


def _int_var(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None


SINGLE = DistContext()


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:<i>``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def device_for(ctx: DistContext, requested: str) -> torch.device:
    """The device of this rank: ``cuda:<local rank>`` in a job on CUDA, else the requested device."""
    device = resolve_device(requested)
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def init(ctx: DistContext, device: torch.device, timeout_minutes: float = 30.0) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU) by the env:// rendezvous at MASTER_ADDR and
    MASTER_PORT. The rank and world size are passed rather than read there: srun sets no RANK/WORLD_SIZE."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        # Binding the device lets NCCL set up its communicators eagerly (and barriers use it).
        device_id=device if device.type == "cuda" else None,
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext, device: torch.device) -> torch.Tensor:
    """Element-wise sum over ranks, returned on the CPU. ``device`` is this rank's training device (NCCL
    reduces CUDA tensors only); use float64 for counts, which then stay exact."""
    if not ctx.enabled:
        return values
    out = values.to(device, copy=True)
    dist.all_reduce(out)
    return out.cpu()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (for small picklable values produced by trusted code)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
