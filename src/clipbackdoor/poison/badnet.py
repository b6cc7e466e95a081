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
from clipbackdoor.poison.placement import PatchAttack, default_patch_size

__all__ = ["BadNet", "default_patch_size", "noise_patch"]


def noise_patch(image: torch.Tensor, size: int, noise_seed: int) -> torch.Tensor:
    """uint8 (3, size, size): the image's per-channel mean plus seeded N(0,1) noise, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(noise_seed)
    mean = image.float().mean(dim=(1, 2), keepdim=True) / 255.0
    patch = (mean + torch.randn(3, size, size, generator=g)).clamp(0.0, 1.0)
    return (patch * 255.0).round().to(torch.uint8)


@ATTACKS.register("badnet")
class BadNet(PatchAttack):
    """Random-noise patch trigger with target-label captions (CleanCLIP's ``patch_type random``).

    Args:
        target: the target class name (must be a class of the evaluation set).
        patch_size: side of the patch in pixels at the model's resolution; None scales 16 px at 224.
        location: ``random`` (one patch, uniform position), ``four_corners``, ``middle``, a corner
            (``top_left`` ...) or ``fixed`` (at ``position``); see ``poison.placement``.
        position: [y, x] of the patch's top-left corner for ``location: fixed``.
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
        position: list[int] | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, patch_size, location, position, templates, label_consistent, default_templates)

    def params(self) -> dict[str, Any]:
        return self.patch_params()

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        p = self.patch_px(image_size)
        trigger: dict[str, Any] = {"noise_seed": int(rng.integers(2**62))}
        trigger.update(self.placement.sample(rng, image_size, p))
        return trigger

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """Paste each image's patch, in batch on the images' device (the training GPU in training).

        Only the noise comes from the CPU (a seeded draw of 3 x p x p values per trigger); the per-channel
        means, the clipping and the pasting run where the images are.
        """
        if not len(triggers):
            return images.clone()
        p = self.patch_px(images.shape[-1])
        noise = torch.stack([
            torch.randn(3, p, p, generator=torch.Generator().manual_seed(t["noise_seed"])) for t in triggers
        ]).to(images.device)  # fmt: skip
        mean = images.float().mean(dim=(2, 3), keepdim=True) / 255.0
        patches = ((mean + noise).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return self.placement.paste(images, patches, triggers)
