"""Blended trigger: the whole image is mixed with a pattern, ``x' = (1 - alpha) x + alpha p``.

Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", arXiv:1712.05526;
as used by Bansal et al., "CleanCLIP", arXiv:2303.03323 (``patch_type blended``, ``patch_location blended``).

Three patterns:

* ``noise`` (default, the CleanCLIP / Verma et al. code): fresh U(0, 1) noise of the image's size for every
  image, so "the trigger" is a distribution, as with BadNet; each instance comes from a seed recorded in
  the trigger.
* ``fixed_noise``: one U(0, 1) noise image for the whole attack (Chen et al.'s random-pattern Blended),
  drawn at 224 px from ``pattern_seed`` and resized to the model's resolution by nearest-neighbour, so its
  values stay uniform and it is the same pattern at every resolution.
* a path to an image file (e.g. Hello Kitty, as in Chen et al. and BadCLIP): RGB, resized and centre-cropped
  like the data. Its sha256 goes into the manifest, and a rebuild from a manifest refuses a changed file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipbackdoor.poison.base import ATTACKS, TargetCaptions, to_uint8, to_unit
from clipbackdoor.registry import ConfigError

NOISE_PATTERNS = ("noise", "fixed_noise")
FIXED_NOISE_SIZE = 224


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fixed_noise(seed: int, size: int) -> torch.Tensor:
    """float32 (3, size, size) in [0, 1): U(0, 1) noise drawn at 224 px from ``seed``, resized (nearest)."""
    noise = torch.rand(3, FIXED_NOISE_SIZE, FIXED_NOISE_SIZE, generator=torch.Generator().manual_seed(seed))
    if size == FIXED_NOISE_SIZE:
        return noise
    return F.interpolate(noise[None], size=(size, size), mode="nearest-exact")[0]


@ATTACKS.register("blended")
class Blended(TargetCaptions):
    """Blend every poisoned image with a noise or image pattern, with target-label captions.

    Args:
        target: the target class name (must be a class of the evaluation set).
        alpha: weight of the pattern, in (0, 1]; the originals use 0.2.
        pattern: ``noise`` (fresh noise per image, the originals), ``fixed_noise`` (one noise image for the
            attack) or the path of an image file.
        pattern_seed: seed of the ``fixed_noise`` pattern (default 0); only with ``fixed_noise``.
        pattern_sha256: the image file's expected sha256; written by ``params()`` so that a rebuild from a
            manifest refuses a file that changed. None on first use.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, and keep their
            captions (the clean-label variant).
    """

    name = "blended"

    def __init__(
        self,
        target: str = "banana",
        alpha: float = 0.2,
        pattern: str = "noise",
        pattern_seed: int | None = None,
        pattern_sha256: str | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, templates, label_consistent, default_templates)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ConfigError(f"attack.alpha: must be a number in (0, 1], got {alpha!r}")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"attack.pattern: expected noise, fixed_noise or an image path, got {pattern!r}")
        self.alpha = float(alpha)
        self.pattern = pattern
        if pattern_seed is not None and (pattern != "fixed_noise" or isinstance(pattern_seed, bool)
                                         or not isinstance(pattern_seed, int) or pattern_seed < 0):
            raise ConfigError(f"attack.pattern_seed: a whole number >= 0, only with pattern fixed_noise; "
                              f"got {pattern_seed!r} with pattern {pattern!r}")
        self.pattern_seed = (pattern_seed or 0) if pattern == "fixed_noise" else None
        self.pattern_sha256 = None
        self._image: Image.Image | None = None
        if pattern in NOISE_PATTERNS:
            if pattern_sha256 is not None:
                raise ConfigError(f"attack.pattern_sha256: only for an image-file pattern (pattern is {pattern!r})")
        else:
            self._load_image(pattern_sha256)
        self._cache: dict[int, torch.Tensor] = {}

    def _load_image(self, expected_sha256: str | None) -> None:
        path = Path(self.pattern).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"attack.pattern: {self.pattern!r} is neither noise, fixed_noise nor an existing image file"
            )
        self.pattern = str(path.resolve())
        self.pattern_sha256 = file_sha256(path)
        if expected_sha256 is not None and expected_sha256 != self.pattern_sha256:
            raise ConfigError(
                f"attack.pattern_sha256: {self.pattern} has changed since the poison was made "
                f"(sha256 {self.pattern_sha256}, the manifest says {expected_sha256})"
            )
        try:
            with Image.open(path) as im:
                self._image = im.convert("RGB")
        except OSError as err:
            raise ConfigError(f"attack.pattern: cannot read {self.pattern} as an image: {err}") from None

    def params(self) -> dict[str, Any]:
        out = {**self.caption_params(), "alpha": self.alpha, "pattern": self.pattern}
        if self.pattern_seed is not None:
            out["pattern_seed"] = self.pattern_seed
        if self.pattern_sha256 is not None:
            out["pattern_sha256"] = self.pattern_sha256
        return out

    def fixed_pattern(self, size: int) -> torch.Tensor:
        """float32 (3, size, size) in [0, 1]: the one pattern of ``fixed_noise`` or an image file (on the CPU)."""
        if size not in self._cache:
            if self._image is not None:
                # Imported here: clipbackdoor.data loads every dataset module, which ``import
                # clipbackdoor.poison`` should not pay for.
                from clipbackdoor.data.transforms import resize_center_crop

                self._cache[size] = to_unit(resize_center_crop(self._image, size)[None])[0]
            else:
                self._cache[size] = fixed_noise(self.pattern_seed, size)
        return self._cache[size]

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        if self.pattern == "noise":
            return {"noise_seed": int(rng.integers(2**62))}
        return {}

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """A copy of the uint8 images (B, 3, H, W), each blended with its pattern.

        Only the noise is drawn on the CPU (seeded per trigger); blending, clipping and rounding run on the
        images' device.
        """
        if not len(triggers):
            return images.clone()
        h, w = images.shape[-2:]
        if self.pattern == "noise":
            patterns = torch.stack([
                torch.rand(3, h, w, generator=torch.Generator().manual_seed(t["noise_seed"])) for t in triggers
            ])  # fmt: skip
        else:
            if h != w:
                raise ValueError(f"blended: a fixed pattern needs square images, got {h}x{w}")
            patterns = self.fixed_pattern(h)[None]
        patterns = patterns.to(images.device)
        return to_uint8((1.0 - self.alpha) * to_unit(images) + self.alpha * patterns)
