"""CyCLIP's cyclic-consistency terms.

Goel et al., "CyCLIP: Cyclic Contrastive Language-Image Pretraining", arXiv:2205.14459 (as computed by its
code). With U, V the normalised image and text embeddings of the global batch (N rows each) and s the
model's learned scale:

    L_in    = mean_ij ( s <u_i, u_j> - s <v_i, v_j> )^2 / s^2 * N      (in-modal: image-image vs text-text)
    L_cross = mean_ij ( s <u_i, v_j> - s <v_i, u_j> )^2 / s^2 * N      (cross-modal: U V^T vs its transpose)

    L = in_weight * L_in + cross_weight * L_cross

(CyCLIP's lambda1 = ``in_weight`` and lambda2 = ``cross_weight``, both 0.25 by default). The mean runs over
all N^2 entries and is then multiplied by N, so each term is sum_ij (...)^2 / N. The scale cancels: the
terms are computed here without it, which gives the same values (to rounding) and leaves no gradient of
pure rounding noise on s, which Adam would turn into full-size random steps of the temperature.

CyCLIP is CLIP plus these terms: mix it as ``clip_weight: 1, cyclip_weight: 1`` (the lambdas live in this
term's options, so its mixing weight stays 1). Under data parallelism every rank gathers U and V and
computes the terms on the full global batch, as the CLIP term does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from clipbackdoor.objectives.base import OBJECTIVES, Term
from clipbackdoor.objectives.distributed import gather_features


def cyclic_losses(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_in, L_cross): N * mean((U U^T - V V^T)^2) and N * mean((U V^T - V U^T)^2)."""
    n = len(image)
    inmodal = (image @ image.T - text @ text.T).square().mean() * n
    cross_logits = image @ text.T
    crossmodal = (cross_logits - cross_logits.T).square().mean() * n
    return inmodal, crossmodal


@OBJECTIVES.register("cyclip")
class CyClipLoss(Term):
    """In-modal and cross-modal cyclic consistency, weighted by CyCLIP's lambda1 and lambda2."""

    def __init__(self, in_weight: float = 0.25, cross_weight: float = 0.25, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__()
        for key, value in (("in_weight", in_weight), ("cross_weight", cross_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        self.in_weight, self.cross_weight = float(in_weight), float(cross_weight)
        self.rank, self.world_size = rank, world_size

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        u = gather_features(out["image_features"], self.rank, self.world_size)
        v = gather_features(out["text_features"], self.rank, self.world_size)
        inmodal, crossmodal = cyclic_losses(u, v)
        total = self.in_weight * inmodal + self.cross_weight * crossmodal
        return {"cyclip_loss": total, "cyclip_in_loss": inmodal, "cyclip_cross_loss": crossmodal}
