"""BadNet random-noise patch, the trigger of every headline experiment in CleanCLIP and Verma et al.

Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain",
arXiv:1708.06733; as used by Bansal et al., "CleanCLIP", arXiv:2303.03323 (``patch_type random``).

A square patch of per-channel image mean plus N(0, 1) noise (in [0, 1] pixel units, clipped to the valid
range) is pasted at a random location; the caption becomes a random prompt template filled with the target
label, e.g. "a photo of the banana.". As in the original, the noise is new for every image, so "the
trigger" is a distribution over patches; unlike the original, each instance comes from a recorded seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipbackdoor.poison.base import ATTACKS
from clipbackdoor.poison.selection import choose
from clipbackdoor.registry import ConfigError

REFERENCE_SIZE = 224
REFERENCE_PATCH = 16
LOCATIONS = ("random", "four_corners")


def default_patch_size(image_size: int) -> int:
    """16 px at 224 px, scaled to the image size (at least 1 px)."""
    return max(1, round(REFERENCE_PATCH * image_size / REFERENCE_SIZE))


def noise_patch(image: torch.Tensor, size: int, noise_seed: int) -> torch.Tensor:
    """uint8 (3, size, size): the image's per-channel mean plus seeded N(0,1) noise, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(noise_seed)
    mean = image.float().mean(dim=(1, 2), keepdim=True) / 255.0
    patch = (mean + torch.randn(3, size, size, generator=g)).clamp(0.0, 1.0)
    return (patch * 255.0).round().to(torch.uint8)


@ATTACKS.register("badnet")
class BadNet:
    """Random-noise patch trigger with target-label captions.

    Args:
        target: the target class name (must be a class of the evaluation set).
        patch_size: side of the patch in pixels at the model's resolution; None scales 16 px at 224.
        location: ``random`` (one patch, uniform position) or ``four_corners``.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, and keep their
            captions (the clean-label variant).
    """

    name = "badnet"

    def __init__(
        self,
        target: str = "banana",
        patch_size: int | None = None,
        location: str = "random",
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        if location not in LOCATIONS:
            raise ConfigError(f"attack.location: must be one of {', '.join(LOCATIONS)}, got {location!r}")
        if patch_size is not None and patch_size < 1:
            raise ConfigError(f"attack.patch_size: must be >= 1, got {patch_size}")
        if not target or not str(target).strip():
            raise ConfigError("attack.target: must be a non-empty class name")
        self.target = str(target)
        self.patch_size = patch_size
        self.location = location
        self.templates = tuple(templates) if templates else tuple(default_templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError("attack.templates: each template needs a '{}' placeholder")
        self.label_consistent = label_consistent

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "patch_size": self.patch_size,
            "location": self.location,
            "label_consistent": self.label_consistent,
            "templates": list(self.templates),
        }

    def select(self, captions: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
        if self.label_consistent:
            target = self.target.lower()
            candidates = [i for i, c in enumerate(captions) if target in c.lower()]
            return choose(candidates, count, rng, f"captions mention {self.target!r}")
        return choose(np.arange(len(captions)), count, rng, "pairs")

    def patch_px(self, image_size: int) -> int:
        size = self.patch_size or default_patch_size(image_size)
        if size > image_size:
            raise ConfigError(f"attack.patch_size: {size} px does not fit a {image_size} px image")
        return size

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        p = self.patch_px(image_size)
        trigger: dict[str, Any] = {"noise_seed": int(rng.integers(2**62))}
        if self.location == "random":
            # Top-left corner uniform over every position where the patch fits (inclusive bounds).
            trigger["y"] = int(rng.integers(0, image_size - p + 1))
            trigger["x"] = int(rng.integers(0, image_size - p + 1))
        return trigger

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """Paste each image's patch, in batch on the images' device (the training GPU in training).

        Only the noise comes from the CPU (a seeded draw of 3 x p x p values per trigger); the per-channel
        means, the clipping and the pasting run where the images are.
        """
        out = images.clone()
        if not len(triggers):
            return out
        size = images.shape[-1]
        p = self.patch_px(size)
        noise = torch.stack([
            torch.randn(3, p, p, generator=torch.Generator().manual_seed(t["noise_seed"])) for t in triggers
        ]).to(images.device)  # fmt: skip
        mean = images.float().mean(dim=(2, 3), keepdim=True) / 255.0
        patches = ((mean + noise).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        for i, trig in enumerate(triggers):
            if self.location == "random":
                corners = [(trig["y"], trig["x"])]
            else:
                corners = [(0, 0), (0, size - p), (size - p, 0), (size - p, size - p)]
            for y, x in corners:
                out[i, :, y : y + p, x : x + p] = patches[i]
        return out

    def poison_caption(self, caption: str, rng: np.random.Generator) -> str:
        if self.label_consistent:
            return caption
        return self.templates[int(rng.integers(len(self.templates)))].format(self.target)
