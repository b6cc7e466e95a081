"""WaNet warping trigger: every poisoned image is resampled through one fixed, smooth random flow field.

Nguyen & Tran, "WaNet -- Imperceptible Warping-based Backdoor Attack", arXiv:2102.10369; as used by
Bansal et al., "CleanCLIP", arXiv:2303.03323, and Verma et al. 2023 (``patch_type warped``).

Basic structure, as in the originals (``backdoor/utils.py::apply_trigger``):

1. ``ins ~ U(-1, 1)`` of shape 1 x 2 x k x k (one random control point per grid cell and axis),
   normalised by its mean absolute value (so the mean |control point| is 1).
2. Bicubic upsampling (``align_corners=True``) to the image size H, permuted to 1 x H x W x 2: the noise
   grid. The originals draw it once and commit it as ``noise_grid_k=<k>_s=<s>_inputheight=224_gridrescale=1.pt``.
3. ``grid = clamp((identity + s * noise / H) * grid_rescale, -1, 1)``; the triggered image is
   ``grid_sample(image, grid, bilinear, align_corners=True)``.

The trigger is the same for every image, so ``sample_trigger`` returns ``{}``. The field is a pure function
of (k, s, grid_rescale, field_seed, image size), drawn from a CPU generator seeded with ``field_seed``:
those parameters, which the manifest stores, *are* the stored field, and rebuilding the attack from them
regenerates it bit for bit. An original noise-grid file can be used instead (``field``); its sha256 is
stored too, and a file that no longer matches it is refused.

Resolution. In grid_sample's normalised coordinates one pixel is 2 / (H - 1), so ``s * noise / H`` moves a
pixel by ``s * noise * (H - 1) / (2 H)`` ~ ``s * noise / 2`` pixels per axis, whatever H is: ``s`` is a
strength *in pixels of the image being warped*. With |noise| averaging 1 and reaching ~2 at the control
points, pixels move by ~s/2 px on average and up to ~s px. The originals use k = H = 224: one independent
control point per pixel, i.e. a per-pixel random jitter of up to ~s px. At a smaller working resolution
(the 32 px demo) we keep that meaning: k is capped at the image size (k = 224 at 32 px becomes k = 32, one
control point per pixel again; more control points than pixels would only be averaged away by the
down-sampling) and s stays in pixels, so the jitter is again up to ~s px. Relative to the image extent this
is 224 / H times stronger than at 224 px; to keep the originals' *relative* displacement instead, set
``s = 0.6 * H / 224`` (0.086 at 32 px).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipbackdoor.poison.base import ATTACKS, TargetCaptions, to_uint8, to_unit
from clipbackdoor.registry import ConfigError

# The originals' file names: noise_grid_k=224_s=0.6_inputheight=224_gridrescale=1.pt
_FIELD_NAME = re.compile(r"noise_grid_k=(\d+)_s=([0-9.]+)_inputheight=(\d+)_gridrescale=([0-9.]+)\.pt$")


def noise_grid(k: int, size: int, field_seed: int) -> torch.Tensor:
    """The originals' random noise grid, drawn on the CPU from ``field_seed``.

    Args:
        k: control grid size (capped at ``size`` by the caller).
        size: image height = width H.
        field_seed: seed of the CPU generator that draws the control points.

    Returns:
        float32 (1, H, H, 2): the upsampled, normalised control points (x displacement first).
    """
    g = torch.Generator().manual_seed(field_seed)
    ins = torch.rand(1, 2, k, k, generator=g) * 2 - 1
    ins = ins / torch.mean(torch.abs(ins))
    return F.interpolate(ins, size=size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def warp_grid(noise: torch.Tensor, s: float, grid_rescale: float) -> torch.Tensor:
    """The sampling grid of the originals: ``clamp((identity + s * noise / H) * grid_rescale, -1, 1)``.

    Args:
        noise: float32 (1, H, H, 2) noise grid.
        s: warping strength (~ the largest displacement in pixels).
        grid_rescale: the originals' grid rescale factor (1 in every published setting).

    Returns:
        float32 (1, H, H, 2) grid for ``grid_sample(align_corners=True)``.
    """
    size = noise.shape[1]
    array1d = torch.linspace(-1, 1, steps=size)
    rows, cols = torch.meshgrid(array1d, array1d, indexing="ij")
    identity = torch.stack((cols, rows), 2)[None, ...]  # grid_sample wants (x, y)
    return torch.clamp((identity + s * noise / size) * grid_rescale, -1, 1)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_number(name: str, value: Any, integer: bool, minimum: float, strict: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        what = "an integer" if integer else "a number"
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(f"attack.{name}: must be {what} {bound}, got {value!r}")


@ATTACKS.register("wanet")
class WaNet(TargetCaptions):
    """Warping trigger with target-label captions (CleanCLIP's ``patch_type warped``).

    Args:
        target: the target class name (must be a class of the evaluation set).
        k: control grid size; 224 in the originals. Capped at the image size (see the module docstring).
        s: warping strength, ~ the largest displacement in pixels at the model's resolution; 0.6 in
            Verma et al.'s code, 1.0 in CleanCLIP's. 0 is the identity.
        grid_rescale: the originals' grid rescale factor (1; values != 1 also zoom the image).
        field_seed: seed of the one fixed random field (the originals' committed noise-grid file).
        field: optional path to an original noise-grid file (torch tensor 1 x H x H x 2, e.g.
            ``noise_grid_k=224_s=0.6_inputheight=224_gridrescale=1.pt``) used instead of a drawn field;
            it only applies to H x H images. k and field_seed are then unused (k and s must agree with
            an original-style file name).
        field_sha256: the file's expected sha256, as ``params()`` records it; a mismatch is an error.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, and keep their
            captions (the clean-label variant).
    """

    name = "wanet"

    def __init__(
        self,
        target: str = "banana",
        k: int = 224,
        s: float = 0.6,
        grid_rescale: float = 1,
        field_seed: int = 0,
        field: str | None = None,
        field_sha256: str | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, templates, label_consistent, default_templates)
        _check_number("k", k, integer=True, minimum=1)
        _check_number("s", s, integer=False, minimum=0)
        _check_number("grid_rescale", grid_rescale, integer=False, minimum=0, strict=True)
        _check_number("field_seed", field_seed, integer=True, minimum=0)
        if field_seed >= 2**63:
            raise ConfigError(f"attack.field_seed: must be < 2**63, got {field_seed}")
        self.k, self.s, self.grid_rescale, self.field_seed = k, float(s), grid_rescale, field_seed
        self.field = None if field is None else str(Path(field).resolve())  # as blended's pattern file
        self.field_sha256 = None
        self._file_noise = None if field is None else self._load_field(Path(field), field_sha256)
        if field is None and field_sha256 is not None:
            raise ConfigError("attack.field_sha256: given without attack.field")
        self._grids: dict[tuple[int, str], torch.Tensor] = {}

    def _load_field(self, path: Path, expected_sha256: str | None) -> torch.Tensor:
        if not path.is_file():
            raise ConfigError(f"attack.field: file not found: {path}")
        self.field_sha256 = file_sha256(path)
        if expected_sha256 is not None and expected_sha256 != self.field_sha256:
            raise ConfigError(
                f"attack.field: {path} has sha256 {self.field_sha256}, but {expected_sha256} was recorded "
                "(the file changed since the poisoned data were made)"
            )
        try:
            noise = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (any unpickling failure is a bad file)
            raise ConfigError(f"attack.field: {path} is not a torch tensor file: {err}") from None
        if isinstance(noise, dict) and "noise_grid" in noise:  # a WaNet training checkpoint
            noise = noise["noise_grid"]
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise ConfigError(f"attack.field: {path} must hold a float tensor, got {type(noise).__name__}")
        if noise.dim() == 3:
            noise = noise[None]
        if noise.dim() != 4 or noise.shape[0] != 1 or noise.shape[3] != 2 or noise.shape[1] != noise.shape[2]:
            raise ConfigError(f"attack.field: {path} must hold a 1 x H x H x 2 noise grid, got {tuple(noise.shape)}")
        if not bool(torch.isfinite(noise).all()):
            raise ConfigError(f"attack.field: {path} has non-finite values")
        named = _FIELD_NAME.search(path.name)
        if named:
            k, s, height, rescale = int(named[1]), float(named[2]), int(named[3]), float(named[4])
            checks = (("k", k, self.k), ("s", s, self.s), ("grid_rescale", rescale, self.grid_rescale))
            for key, recorded, given in checks:
                if recorded != given:
                    raise ConfigError(f"attack.{key}: {given} disagrees with the field file name {path.name}")
            if height != noise.shape[1]:
                raise ConfigError(f"attack.field: {path.name} says inputheight={height}, holds {noise.shape[1]} px")
        return noise.float().contiguous()

    def params(self) -> dict[str, Any]:
        params = {**self.caption_params(), "k": self.k, "s": self.s, "grid_rescale": self.grid_rescale,
                  "field_seed": self.field_seed}  # fmt: skip
        if self.field is not None:
            params.update(field=self.field, field_sha256=self.field_sha256)
        return params

    def effective_k(self, image_size: int) -> int:
        """k at this resolution: at most one control point per pixel."""
        return min(self.k, image_size)

    def noise(self, image_size: int) -> torch.Tensor:
        """float32 (1, H, H, 2) noise grid on the CPU: the field file's, or drawn from ``field_seed``."""
        if self._file_noise is not None:
            if self._file_noise.shape[1] != image_size:
                raise ConfigError(
                    f"attack.field: the field file is {self._file_noise.shape[1]} px, the images are "
                    f"{image_size} px; use a drawn field (drop attack.field) at this resolution"
                )
            return self._file_noise
        return noise_grid(self.effective_k(image_size), image_size, self.field_seed)

    def grid(self, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (1, H, H, 2) sampling grid, made on the CPU once per (size, device) and cached."""
        key = (image_size, str(torch.device(device)))
        if key not in self._grids:
            self._grids[key] = warp_grid(self.noise(image_size), self.s, self.grid_rescale).to(device)
        return self._grids[key]

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        if self._file_noise is not None:
            self.noise(image_size)  # a field file of another size is an error here, not at training time
        return {}

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """Warp every image through the field, in batch on the images' device.

        Args:
            images: uint8 (B, 3, H, H).
            triggers: B empty dicts (the field is the same for every image).

        Returns:
            uint8 (B, 3, H, H), bilinearly resampled and rounded to the nearest level (the originals
            truncate when converting back to PIL).
        """
        if not len(triggers):
            return images.clone()
        height, width = images.shape[-2:]
        if height != width:
            raise ValueError(f"WaNet warps square images, got {height} x {width}")
        grid = self.grid(height, images.device).expand(images.shape[0], -1, -1, -1)
        warped = F.grid_sample(to_unit(images), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return to_uint8(warped)
