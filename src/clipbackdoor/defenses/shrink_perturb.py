"""Shrink and perturb: move the poisoned weights towards a fresh initialisation once, then clean.

Ash and Adams, "On Warm-Starting Neural Network Training" (NeurIPS 2020), as the anchor paper (Verma et al.
2023, 120 runs) applies it before cleaning:

    theta <- shrink * theta_poisoned + perturb * theta_fresh

for every parameter, the logit scale included, where theta_fresh is a freshly initialised model of the same
architecture (not Gaussian noise); buffers (BatchNorm running statistics) are left as they are. Defaults
0.95 and 1e-4, the paper's. The fresh model comes from the run's seed, so every rank, and every repetition
of the run, computes the same weights; a resumed run does not apply it again (its weights are in last.pt).

The cleaning objective defaults to CleanCLIP's (MMCL + SSL, weights 1 and 1).
"""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense, StartContext
from clipbackdoor.registry import ConfigError


@DEFENSES.register("shrink_perturb")
class ShrinkPerturb(Defense):
    def __init__(self, shrink: float = 0.95, perturb: float = 1e-4, clip_weight: float = 1.0,
                 inmodal_weight: float = 1.0) -> None:
        for name, value in (("shrink", shrink), ("perturb", perturb)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"defense.{name}: must be a number >= 0, got {value!r}")
        self.shrink, self.perturb = float(shrink), float(perturb)
        self.clip_weight, self.inmodal_weight = clip_weight, inmodal_weight

    def config(self) -> dict[str, Any]:
        return {"objective": {"clip_weight": self.clip_weight, "inmodal_weight": self.inmodal_weight}}

    def start(self, run: StartContext) -> None:
        import torch  # here, not at the top: reading a config builds defenses, and that needs no torch

        fresh = dict(run.fresh_model().named_parameters())
        with torch.no_grad():
            for name, param in run.model.named_parameters():
                param.mul_(self.shrink).add_(fresh[name].to(param.device, param.dtype), alpha=self.perturb)
