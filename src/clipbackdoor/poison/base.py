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

from clipbackdoor.registry import Registry

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
