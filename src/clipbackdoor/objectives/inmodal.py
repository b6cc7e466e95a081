"""SSL: CleanCLIP's in-modal self-supervised term.

Bansal et al., "CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive Learning",
arXiv:2303.03323 (the L_SS term, as implemented in its code).

    L = 1/2 [ CE_rows(s U U~^T) + CE_rows(s V V~^T) ]

Rows are the original views and columns the augmented ones: one direction per modality, the negatives are
the *augmented* views of the other samples only (no same-view negatives as in SimCLR), and the temperature is
the CLIP model's learned one. Training with this term alone makes each encoder learn its own features, which
is what CleanCLIP relies on to break the trigger-to-caption shortcut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clipbackdoor.objectives.base import OBJECTIVES, VIEWS, Term, view_features
from clipbackdoor.objectives.clip import info_nce
from clipbackdoor.objectives.distributed import gather_features


@OBJECTIVES.register("inmodal")
class InModalLoss(Term):
    """Image-to-augmented-image plus text-to-augmented-text InfoNCE, one direction each."""

    needs = frozenset({VIEWS})

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        image_aug, text_aug = view_features(out, "inmodal")
        g = lambda x: gather_features(x, self.rank, self.world_size)  # noqa: E731
        s = out["logit_scale"]
        image = info_nce(g(out["image_features"]), g(image_aug), s)
        text = info_nce(g(out["text_features"]), g(text_aug), s)
        return {"inmodal_loss": 0.5 * (image + text), "inmodal_image_loss": image, "inmodal_text_loss": text}
