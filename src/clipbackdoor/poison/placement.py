"""Where a square patch goes, and how big it is: what the patch attacks (``badnet``, ``solid``,
``image_patch``) share.

``random`` draws the top-left corner of each instance uniformly over every position where the patch fits
(the originals' ``randint(0, size - p)`` inclusive) and records it in the trigger; the other placements are
fixed: ``four_corners`` pastes the patch into all four corners, ``middle`` centres it, ``top_left`` ...
``bottom_right`` put it in one corner, and ``fixed`` at ``position: [y, x]`` (top-left corner, in pixels
at the model's resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipbackdoor.poison.base import TargetCaptions
from clipbackdoor.registry import ConfigError

REFERENCE_SIZE = 224
REFERENCE_PATCH = 16
LOCATIONS = ("random", "four_corners", "middle", "top_left", "top_right", "bottom_left", "bottom_right", "fixed")


def default_patch_size(image_size: int) -> int:
    """16 px at 224 px, scaled to the image size (at least 1 px)."""
    return max(1, round(REFERENCE_PATCH * image_size / REFERENCE_SIZE))


def check_patch_size(patch_size: int | None) -> int | None:
    """A patch side in pixels (a whole number >= 1), or None for the attack's default."""
    if patch_size is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1):
        raise ConfigError(f"attack.patch_size: must be a whole number >= 1, got {patch_size!r}")
    return patch_size


class Placement:
    """A validated placement; ``sample`` draws a trigger's position, ``corners`` lists where it is pasted."""

    def __init__(self, location: str = "random", position: Sequence[int] | None = None) -> None:
        if location not in LOCATIONS:
            raise ConfigError(f"attack.location: must be one of {', '.join(LOCATIONS)}, got {location!r}")
        if location == "fixed":
            if (position is None or len(position) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in position)):
                raise ConfigError(f"attack.position: location 'fixed' needs [y, x] pixel offsets >= 0, got {position!r}")
            position = (int(position[0]), int(position[1]))
        elif position is not None:
            raise ConfigError(f"attack.position: only used with location 'fixed' (location is {location!r})")
        self.location, self.position = location, position

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"location": self.location}
        if self.position is not None:
            out["position"] = list(self.position)
        return out

    def check_fits(self, p: int, size: int) -> None:
        if p > size:
            raise ConfigError(f"attack.patch_size: {p} px does not fit a {size} px image")
        if self.position is not None and (self.position[0] + p > size or self.position[1] + p > size):
            raise ConfigError(f"attack.position: a {p} px patch at {list(self.position)} leaves a {size} px image")

    def sample(self, rng: np.random.Generator, size: int, p: int) -> dict[str, Any]:
        """The per-instance part of a trigger: the corner of a ``random`` patch, nothing otherwise."""
        if self.location != "random":
            return {}
        # Top-left corner uniform over every position where the patch fits (inclusive bounds).
        return {"y": int(rng.integers(0, size - p + 1)), "x": int(rng.integers(0, size - p + 1))}

    def corners(self, trigger: dict[str, Any], size: int, p: int) -> list[tuple[int, int]]:
        far, mid = size - p, (size - p) // 2
        fixed = {
            "four_corners": [(0, 0), (0, far), (far, 0), (far, far)],
            "middle": [(mid, mid)],
            "top_left": [(0, 0)],
            "top_right": [(0, far)],
            "bottom_left": [(far, 0)],
            "bottom_right": [(far, far)],
        }
        if self.location == "random":
            return [(trigger["y"], trigger["x"])]
        if self.location == "fixed":
            return [self.position]
        return fixed[self.location]

    def paste(self, images: torch.Tensor, patches: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """A copy of ``images`` (B, 3, S, S) with ``patches[i]`` (3, p, p) pasted at trigger i's corners."""
        out = images.clone()
        size, p = images.shape[-1], patches.shape[-1]
        for i, trig in enumerate(triggers):
            for y, x in self.corners(trig, size, p):
                out[i, :, y : y + p, x : x + p] = patches[i]
        return out


class PatchAttack(TargetCaptions):
    """The base of attacks that paste a square patch of ``patch_size`` (None: 16 px at 224, scaled) at a
    ``Placement``; subclasses say what the patch holds."""

    def __init__(
        self,
        target: str,
        patch_size: int | None,
        location: str,
        position: Sequence[int] | None,
        templates: list[str] | None,
        label_consistent: bool,
        default_templates: Sequence[str],
    ) -> None:
        super().__init__(target, templates, label_consistent, default_templates)
        self.patch_size = check_patch_size(patch_size)
        self.placement = Placement(location, position)
        self.location = location

    def patch_params(self) -> dict[str, Any]:
        """The caption and patch parts of ``params()``."""
        return {**self.caption_params(), "patch_size": self.patch_size, **self.placement.params()}

    def patch_px(self, image_size: int) -> int:
        size = self.patch_size or default_patch_size(image_size)
        self.placement.check_fits(size, image_size)
        return size
