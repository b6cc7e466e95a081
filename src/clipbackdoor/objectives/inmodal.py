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

import torch

from clipbackdoor.objectives.base import OBJECTIVES, ModelOutputs
from clipbackdoor.objectives.clip import info_nce
from clipbackdoor.objectives.distributed import gather_features


@OBJECTIVES.register("inmodal")
class InModalLoss(torch.nn.Module):
    """Image-to-augmented-image plus text-to-augmented-text InfoNCE, one direction each."""

    needs_views = True

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def forward(self, out: ModelOutputs) -> dict[str, torch.Tensor]:
        if out.image_aug is None or out.text_aug is None:
            raise ValueError("the inmodal objective needs augmented image and text views")
        g = lambda x: gather_features(x, self.rank, self.world_size)  # noqa: E731
        image = info_nce(g(out.image), g(out.image_aug), out.logit_scale)
        text = info_nce(g(out.text), g(out.text_aug), out.logit_scale)
        return {"inmodal_loss": 0.5 * (image + text), "inmodal_image_loss": image, "inmodal_text_loss": text}
