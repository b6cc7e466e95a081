"""Gathering embeddings across data-parallel ranks so negatives span the global batch.

Every rank all-gathers the (detached) embeddings of the others and puts its own grad-carrying tensor back
in its slot, rank-major; each rank then computes the full global-batch loss L and back-propagates through
its own rows only. That is the scheme of the original code (and of open_clip's ``gather_with_grad=False``).

On its own, that scheme leaves the encoders' gradient W times too small: rank r's backward gives
dL/d(its rows), DDP *averages* over W ranks, so the encoders get (1/W) dL/dθ while the logit scale, used
whole on every rank, gets the full dL/ds. Here the local rows' gradient is multiplied by W on its way back,
which makes DDP's average the exact gradient of L for every parameter: a W-process job takes the same step
as one process on the same global batch. With Adam the original's scale error mostly cancels out, but not
for the temperature's relative step size, weight decay's balance or gradient clipping.

Ranks may hold different numbers of rows (a batch loses rows whose image could not be read); the gather
exchanges sizes first and pads.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """(B_r, D) on each rank -> (sum_r B_r, D), rank-major, with gradient (scaled by ``world_size``)
    through the local block."""
    if world_size == 1:
        return features
    sizes = _gather_sizes(len(features), features.device, world_size)
    largest = max(sizes)
    sent = features.detach()
    if len(sent) < largest:
        sent = torch.cat([sent, sent.new_zeros(largest - len(sent), *sent.shape[1:])])
    gathered = [torch.empty_like(sent) for _ in range(world_size)]
    dist.all_gather(gathered, sent.contiguous())
    blocks = [g[:n] for g, n in zip(gathered, sizes)]
    blocks[rank] = _ScaleGrad.apply(features, float(world_size))
    return torch.cat(blocks, dim=0)


def _gather_sizes(size: int, device: torch.device, world_size: int) -> list[int]:
    mine = torch.tensor([size], dtype=torch.long, device=device)
    sizes = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]
