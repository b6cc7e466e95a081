"""Solid-colour patch: the "yellow" BadNet variant of CleanCLIP and Verma et al. (``patch_type yellow``).

Gu et al., "BadNets", arXiv:1708.06733; as used by Bansal et al., "CleanCLIP", arXiv:2303.03323.

A square patch of one colour (R=G=255, B=0 in the originals) is pasted where the placement says (a uniformly
random position by default, as in the originals); the caption becomes a prompt template filled with the
target label. The trigger is the same for every image except for where it goes, so a trigger instance holds
only the placement's draw (the corner of a ``random`` patch, nothing for fixed placements).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipbackdoor.poison.base import ATTACKS
from clipbackdoor.poison.placement import PatchAttack
from clipbackdoor.registry import ConfigError

COLOURS = {
    "yellow": (255, 255, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


def parse_colour(colour: Any) -> tuple[int, int, int]:
    """An RGB triple of levels 0..255 from ``[r, g, b]``, a name of ``COLOURS`` or ``"#rrggbb"``."""
    if isinstance(colour, str):
        name = colour.strip().lower()
        if name in COLOURS:
            return COLOURS[name]
        if re.fullmatch(r"#[0-9a-f]{6}", name):
            return int(name[1:3], 16), int(name[3:5], 16), int(name[5:7], 16)
    elif (isinstance(colour, Sequence) and len(colour) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)):
        return int(colour[0]), int(colour[1]), int(colour[2])
    raise ConfigError(
        f"attack.colour: expected [r, g, b] levels 0..255, '#rrggbb' or one of {', '.join(COLOURS)}; got {colour!r}"
    )


@ATTACKS.register("solid")
class SolidPatch(PatchAttack):
    """Solid-colour patch trigger with target-label captions (CleanCLIP's ``patch_type yellow``).

    Args:
        target: the target class name (must be a class of the evaluation set).
        patch_size: side of the patch in pixels at the model's resolution; None scales 16 px at 224.
        colour: the patch colour: ``[r, g, b]`` (0..255), a name (yellow, red, green, blue, white, black) or
            ``"#rrggbb"``; the originals' yellow by default.
        location: ``random``, ``four_corners``, ``middle``, a corner or ``fixed``; see ``poison.placement``.
        position: [y, x] of the patch's top-left corner for ``location: fixed``.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, and keep their
            captions (the clean-label variant).
    """

    name = "solid"

    def __init__(
        self,
        target: str = "banana",
        patch_size: int | None = None,
        colour: Any = (255, 255, 0),
        location: str = "random",
        position: list[int] | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, patch_size, location, position, templates, label_consistent, default_templates)
        self.colour = parse_colour(colour)

    def params(self) -> dict[str, Any]:
        return {**self.patch_params(), "colour": list(self.colour)}

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        return self.placement.sample(rng, image_size, self.patch_px(image_size))

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """A copy of the uint8 images (B, 3, S, S) with the patch pasted at each trigger's position."""
        if not len(triggers):
            return images.clone()
        p = self.patch_px(images.shape[-1])
        colour = torch.tensor(self.colour, dtype=torch.uint8, device=images.device).view(1, 3, 1, 1)
        return self.placement.paste(images, colour.expand(len(triggers), 3, p, p), triggers)
