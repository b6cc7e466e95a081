"""Gathering embeddings across data-parallel ranks so negatives span the global batch.

Every rank all-gathers the (detached) embeddings of the others and puts its own grad-carrying tensor back in
its slot; each rank then computes the full global-batch loss and DDP averages the gradients. This is the
"local tensor with grad + detached others" scheme of the original code and of open_clip's
``gather_features(local_loss=False, gather_with_grad=False)``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """(B, D) on each rank -> (world_size * B, D), rank-major, with gradient through the local block."""
    if world_size == 1:
        return features
    gathered = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(gathered, features.detach().contiguous())
    gathered[rank] = features
    return torch.cat(gathered, dim=0)
