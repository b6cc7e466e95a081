"""SIG: a sinusoidal signal over the whole image, ``x'[c, i, j] = x[c, i, j] + A sin(2 pi j f / W)``.

Barni et al., "A New Backdoor Attack in CNNs by Training Set Corruption Without Label Poisoning",
arXiv:1902.11237; as used by Bansal et al., "CleanCLIP", arXiv:2303.03323 (``patch_type SIG``).

The signal has amplitude A = 60 levels (of 255) and f = 6 periods across the image; it is the same for
every image and every row (or column, for ``direction: vertical``), so a trigger instance has no
parameters. Results are clipped to 0..255 and rounded.

The CleanCLIP / Verma et al. code only runs SIG with ``patch_location blended`` (the 224 x 224 signal fits
no patch), which mixes instead of adding: ``x' = 0.8 x + 0.2 s``, i.e. a 12-level sinusoid on a
darkened image. ``alpha: 0.2`` reproduces that; the default (``alpha: null``) is Barni et al.'s addition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipbackdoor.poison.base import ATTACKS, TargetCaptions
from clipbackdoor.registry import ConfigError

DIRECTIONS = ("horizontal", "vertical")


def sinusoid(length: int, amplitude: float, periods: float) -> torch.Tensor:
    """float32 (length,): ``amplitude * sin(2 pi k periods / length)`` for k = 0..length-1 (float64 math)."""
    k = torch.arange(length, dtype=torch.float64)
    return (amplitude * torch.sin(2 * math.pi * k * periods / length)).float()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@ATTACKS.register("sig")
class Sig(TargetCaptions):
    """Sinusoidal-signal trigger with target-label captions.

    Args:
        target: the target class name (must be a class of the evaluation set).
        amplitude: amplitude of the sinusoid in pixel levels (0..255 scale); 60 as in the originals.
        periods: number of periods across the image (f); 6 as in the originals.
        direction: ``horizontal`` (the signal varies along the columns, constant down each column, as in
            the originals) or ``vertical`` (varies along the rows).
        alpha: None adds the signal (Barni et al.); a number in (0, 1] mixes it instead,
            ``(1 - alpha) x + alpha s``, as the CleanCLIP code does with 0.2.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, and keep their
            captions (the clean-label variant Barni et al. designed SIG for).
    """

    name = "sig"

    def __init__(
        self,
        target: str = "banana",
        amplitude: float = 60.0,
        periods: float = 6.0,
        direction: str = "horizontal",
        alpha: float | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, templates, label_consistent, default_templates)
        if not _number(amplitude) or not 0 < amplitude <= 255:
            raise ConfigError(f"attack.amplitude: must be in (0, 255] pixel levels, got {amplitude!r}")
        if not _number(periods) or periods <= 0:
            raise ConfigError(f"attack.periods: must be a number > 0, got {periods!r}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"attack.direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if alpha is not None and (not _number(alpha) or not 0 < alpha <= 1):
            raise ConfigError(f"attack.alpha: must be null (add the signal) or in (0, 1], got {alpha!r}")
        self.amplitude, self.periods = float(amplitude), float(periods)
        self.direction = direction
        self.alpha = None if alpha is None else float(alpha)

    def params(self) -> dict[str, Any]:
        return {**self.caption_params(), "amplitude": self.amplitude, "periods": self.periods,
                "direction": self.direction, "alpha": self.alpha}

    def signal(self, height: int, width: int) -> torch.Tensor:
        """float32 (height, width) in pixel levels: the sinusoid, constant along one axis."""
        if self.direction == "horizontal":
            return sinusoid(width, self.amplitude, self.periods)[None, :].expand(height, width)
        return sinusoid(height, self.amplitude, self.periods)[:, None].expand(height, width)

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        return {}

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """A copy of the uint8 images (B, 3, H, W) with the signal on every channel (``triggers`` are empty
        dicts, one per image). Computed in pixel levels on the images' device."""
        if not len(triggers):
            return images.clone()
        if len(triggers) != len(images):
            raise ValueError(f"sig: {len(triggers)} triggers for {len(images)} images")
        s = self.signal(*images.shape[-2:]).to(images.device)
        x = images.float()
        x = x + s if self.alpha is None else (1.0 - self.alpha) * x + self.alpha * s
        return x.clamp(0.0, 255.0).round().to(torch.uint8)
