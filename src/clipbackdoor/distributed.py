"""Data-parallel training on torch.distributed, launched by ``torchrun`` (one node or many).

The library never reads the environment: the CLI builds a ``DistContext`` from torchrun's variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and hands it to the trainer. ``world_size == 1`` is an ordinary
single-process run and touches no process group.

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
        """Read torchrun's variables from ``env`` (the CLI passes ``os.environ``)."""
        try:
            ctx = cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
        except ValueError as err:
            raise ConfigError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from None
        if not 0 <= ctx.rank < ctx.world_size:
            raise ConfigError(f"RANK={ctx.rank} is outside WORLD_SIZE={ctx.world_size}")
        return ctx


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
    """Join the process group (NCCL on CUDA, gloo on the CPU); torchrun's env:// rendezvous."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
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
