"""SSL-only cleaning: only the in-modal self-supervised term (CleanCLIP with ``clip_weight 0``)."""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense


@DEFENSES.register("ssl")
class SSLFinetune(Defense):
    def __init__(self, inmodal_weight: float = 1.0) -> None:
        self.inmodal_weight = inmodal_weight

    def config(self) -> dict[str, Any]:
        return {"objective": {"clip_weight": 0.0, "inmodal_weight": self.inmodal_weight}}
