"""Heavy L2: clean with a large weight decay, one of the anchor paper's cleaning variants.

Verma et al. 2023 (section 2.2 of docs' system description) swept the cleaning weight decay over
{0.2, 0.5, 1, 2, 5, 10, 20, 50, 100} against the learning rate (155 runs). In the original code the cleaning
run loaded the pre-training optimizer state, and ``Optimizer.load_state_dict`` restores each group's saved
``weight_decay`` (0.1): the swept value never applied. Here the defense sets ``train.weight_decay`` and
``init.inherit_optimizer: false``, so the cleaning optimizer starts with fresh AdamW moments and the decay
it is given (decoupled, as AdamW: each step multiplies the decayed weights by 1 - lr * weight_decay). Norm
weights, biases and the logit scale are exempt, as in CLIP.

The objective defaults to CleanCLIP's (MMCL + SSL, weights 1 and 1); ``clip_weight`` and ``inmodal_weight``
choose another. The paper's grid is the shipped sweep ``heavy-l2``.
"""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense
from clipbackdoor.registry import ConfigError


@DEFENSES.register("heavy_l2")
class HeavyL2(Defense):
    def __init__(self, weight_decay: float = 1.0, clip_weight: float = 1.0, inmodal_weight: float = 1.0) -> None:
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ConfigError(f"defense.weight_decay: must be a number >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.clip_weight, self.inmodal_weight = clip_weight, inmodal_weight

    def config(self) -> dict[str, Any]:
        return {
            "objective": {"clip_weight": self.clip_weight, "inmodal_weight": self.inmodal_weight},
            "train": {"weight_decay": self.weight_decay},
            "init": {"inherit_optimizer": False},
        }
