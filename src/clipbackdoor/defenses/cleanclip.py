"""CleanCLIP: fine-tune on clean pairs with MMCL plus the in-modal self-supervised term.

Bansal et al., "CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive Learning",
arXiv:2303.03323. L = clip_weight * L_MMCL + inmodal_weight * L_SSL; defaults 1 and 1.
"""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense


@DEFENSES.register("cleanclip")
class CleanCLIP(Defense):
    def __init__(self, clip_weight: float = 1.0, inmodal_weight: float = 1.0) -> None:
        self.clip_weight, self.inmodal_weight = clip_weight, inmodal_weight

    def config(self) -> dict[str, Any]:
        return {"objective": {"clip_weight": self.clip_weight, "inmodal_weight": self.inmodal_weight}}
