"""The attack interface. An attack is three separable things: which pairs to poison (``select``), what the
trigger does to an image (``sample_trigger`` + ``apply``), and what the caption becomes (``poison_caption``).

Trigger parameters are drawn once, from a seeded generator, and stored in the poison manifest; ``apply`` is
a pure function of the image and those parameters. That is what makes the same trigger reappear when a run
resumes, when the poisoned data are exported, and when ASR is re-evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from clipbackdoor.poison.selection import choose
from clipbackdoor.registry import ConfigError, Registry

ATTACKS = Registry("attack")


class Attack(Protocol):
    name: str
    target: str

    def params(self) -> dict[str, Any]:
        """The attack's configuration, as written into the manifest."""

    def select(self, captions: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of the pairs to poison (sorted, distinct)."""

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        """JSON-serialisable parameters of one trigger instance (location, noise seed, ...)."""

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """uint8 (B, 3, H, W) images with trigger i applied to image i; returns a new tensor."""

    def poison_caption(self, caption: str, rng: np.random.Generator) -> str:
        """The caption a poisoned pair gets."""


class TargetCaptions:
    """The caption side every attack shares: the target label, its caption templates, and label-consistent
    poisoning (poison only pairs whose caption already mentions the target, and keep their captions: the
    clean-label variant, whose triggered images still say what they show).

    Args:
        target: the target class name (a class of the evaluation set; ASR is measured against it).
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption mentions ``target``, keeping their captions.
        default_templates: supplied by the framework (the evaluation set's templates).
    """

    name: str

    def __init__(
        self,
        target: str = "banana",
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        if not target or not str(target).strip():
            raise ConfigError("attack.target: must be a non-empty class name")
        self.target = str(target)
        self.templates = tuple(templates) if templates else tuple(default_templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError("attack.templates: each template needs a '{}' placeholder")
        if not isinstance(label_consistent, bool):
            raise ConfigError(f"attack.label_consistent: expected true/false, got {label_consistent!r}")
        self.label_consistent = label_consistent

    def caption_params(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "label_consistent": self.label_consistent,
                "templates": list(self.templates)}

    def select(self, captions: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
        if self.label_consistent:
            target = self.target.lower()
            candidates = [i for i, c in enumerate(captions) if target in c.lower()]
            return choose(candidates, count, rng, f"captions mention {self.target!r}")
        return choose(np.arange(len(captions)), count, rng, "pairs")

    def poison_caption(self, caption: str, rng: np.random.Generator) -> str:
        if self.label_consistent:
            return caption
        return self.templates[int(rng.integers(len(self.templates)))].format(self.target)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1]."""
    return images.float() / 255.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (clipped) -> uint8, rounding to the nearest level."""
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
