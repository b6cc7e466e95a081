"""MMCL-only cleaning: plain CLIP fine-tuning on clean pairs (a baseline in Verma et al. 2023)."""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense


@DEFENSES.register("mmcl")
class MMCLFinetune(Defense):
    def config(self) -> dict[str, Any]:
        return {"objective": {"clip_weight": 1.0, "inmodal_weight": 0.0}}
