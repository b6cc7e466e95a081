"""MMCL: CLIP's symmetric InfoNCE loss.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv:2103.00020.

    L = 1/2 [ CE_rows(s U V^T) + CE_rows(s V U^T) ],  targets on the diagonal,

with U, V the normalised image and text embeddings of the (global) batch and s the learned scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from clipbackdoor.objectives.base import OBJECTIVES, Term
from clipbackdoor.objectives.distributed import gather_features


def info_nce(queries: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``scale * queries @ keys.T`` (N, N) with targets on the diagonal."""
    logits = scale * queries @ keys.T
    return F.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


@OBJECTIVES.register("clip")
class ClipLoss(Term):
    """Symmetric image-text InfoNCE (MMCL)."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        u = gather_features(out["image_features"], self.rank, self.world_size)
        v = gather_features(out["text_features"], self.rank, self.world_size)
        s = out["logit_scale"]
        loss = 0.5 * (info_nce(u, v, s) + info_nce(v, u, s))
        return {"clip_loss": loss}
