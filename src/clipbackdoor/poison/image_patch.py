"""A fixed RGB image as the patch trigger: a logo, a sticker, or a patch optimised against a model.

The optimised patch of BadCLIP (Liang et al., "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal
Contrastive Learning", arXiv:2311.16194) is used this way: ``clipbackdoor optimize-patch`` writes it as a
PNG, and ``attack: {name: image_patch, path: patch.png, target: banana}`` pastes it like any other patch.

Unlike BadNet's noise, the patch is the same for every image; a trigger records only its placement. Without
an image, the patch is a fixed uniform-noise patch drawn from ``noise_seed`` (the patch ``optimize-patch``
starts from, and its baseline). The
patch's pixels are part of ``params()`` (base64 of the raw uint8 bytes), so a poison manifest regenerates
its poisoned data bit for bit even when the image file has changed or is gone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipbackdoor.poison.base import ATTACKS, TargetCaptions
from clipbackdoor.poison.placement import Placement, check_patch_size
from clipbackdoor.registry import ConfigError
from clipbackdoor.seeding import torch_generator

# Side of the noise patch used when no image is given: the patch size of the paper's 224 px experiments.
DEFAULT_NOISE_SIDE = 16


def encode_pixels(patch: torch.Tensor) -> str:
    """uint8 (3, s, s) -> base64 of its bytes in channel-first (C, H, W) order."""
    return base64.b64encode(patch.contiguous().numpy().tobytes()).decode("ascii")


def decode_pixels(pixels: str, side: int | None) -> torch.Tensor:
    """The inverse of ``encode_pixels``: uint8 (3, side, side)."""
    if side is None or isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ConfigError(f"attack.side: inline pixels need the patch's side in pixels (an integer >= 1), "
                          f"got {side!r}")
    try:
        raw = base64.b64decode(str(pixels), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("attack.pixels: not valid base64") from None
    if len(raw) != 3 * side * side:
        raise ConfigError(f"attack.pixels: holds {len(raw)} bytes, but a {side} px RGB patch needs "
                          f"3 x {side} x {side} = {3 * side * side}")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()).view(3, side, side)


def noise_patch_image(side: int, seed: int) -> torch.Tensor:
    """uint8 (3, side, side) of uniform noise, a pure function of ``seed``."""
    unit = torch.rand(3, side, side, generator=torch_generator(seed, "image-patch-noise"))
    return (unit * 255.0).round().to(torch.uint8)


def read_patch_image(path: str | Path) -> Image.Image:
    """An RGB PIL image from ``path`` (PNG, JPEG, ...); errors name ``attack.path`` and the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ConfigError(f"attack.path: patch image not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ConfigError(f"attack.path: cannot read patch image {path}: {err}") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _resize(patch: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (3, h, w) -> uint8 (3, size, size) with PIL's bicubic filter (deterministic); unchanged if
    it already has that size."""
    if patch.shape[1:] == (size, size):
        return patch
    image = Image.fromarray(patch.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    return _to_tensor(image.resize((size, size), Image.Resampling.BICUBIC))


@ATTACKS.register("image_patch")
class ImagePatch(TargetCaptions):
    """Paste a fixed RGB patch image, with target-label captions.

    Args:
        target: the target class name (must be a class of the evaluation set).
        path: the patch image (PNG, JPEG, ...); read once, when the attack is built. Ignored when
            ``pixels`` is given (it then only records where the patch came from).
        pixels: the patch inline: base64 of its uint8 bytes, channel-first (3, side, side). ``params()``
            always writes it, so a manifest does not depend on the file.
        side: the side in pixels of the inline patch.
        noise_seed: with neither ``path`` nor ``pixels``, the patch is uniform noise from this seed
            (None: 0), of side ``patch_size`` (None: 16 px).
        patch_size: side of the pasted patch in pixels at the model's resolution; None uses the image's own
            size (it must then be square). Otherwise the image is resized to it (PIL bicubic).
        location: ``random``, ``four_corners``, ``middle``, a corner or ``fixed``; see ``poison.placement``.
        position: [y, x] of the patch's top-left corner for ``location: fixed``.
        templates: caption templates with ``{}``; None uses the evaluation set's prompt templates.
        label_consistent: poison only pairs whose caption already mentions the target, keeping their
            captions.
    """

    name = "image_patch"

    def __init__(
        self,
        target: str = "banana",
        path: str | None = None,
        pixels: str | None = None,
        side: int | None = None,
        noise_seed: int | None = None,
        patch_size: int | None = None,
        location: str = "random",
        position: list[int] | None = None,
        templates: list[str] | None = None,
        label_consistent: bool = False,
        default_templates: Sequence[str] = ("a photo of a {}.",),
    ) -> None:
        super().__init__(target, templates, label_consistent, default_templates)
        check_patch_size(patch_size)
        if pixels is not None:
            patch = decode_pixels(pixels, side)
        elif path is not None:
            patch = _to_tensor(read_patch_image(path))
        else:
            noise_seed = 0 if noise_seed is None else noise_seed
            if isinstance(noise_seed, bool) or not isinstance(noise_seed, int):
                raise ConfigError(f"attack.noise_seed: expected an integer, got {noise_seed!r}")
            patch = noise_patch_image(patch_size or DEFAULT_NOISE_SIDE, noise_seed)
        h, w = patch.shape[1:]
        if patch_size is None and h != w:
            raise ConfigError(f"attack.patch_size: the patch image {path} is {w}x{h} px, not square; set "
                              "patch_size to resize it")
        self.patch = _resize(patch, patch_size or h)
        self.path = None if path is None else str(path)
        self.noise_seed = noise_seed
        self.patch_size = patch_size
        self.placement = Placement(location, position)

    @property
    def side(self) -> int:
        return self.patch.shape[-1]

    def params(self) -> dict[str, Any]:
        # The pixels are those pasted (after any resize), so rebuilding from params never resizes again;
        # ``path`` and ``noise_seed`` only say where they came from.
        source = {"path": self.path} if self.path is not None else {"noise_seed": self.noise_seed}
        return {**self.caption_params(), **source, "pixels": encode_pixels(self.patch), "side": self.side,
                "patch_size": self.patch_size, **self.placement.params()}

    def sample_trigger(self, rng: np.random.Generator, image_size: int) -> dict[str, Any]:
        self.placement.check_fits(self.side, image_size)
        return self.placement.sample(rng, image_size, self.side)

    def apply(self, images: torch.Tensor, triggers: Sequence[dict[str, Any]]) -> torch.Tensor:
        """Paste the patch at each trigger's place, on the images' device."""
        if not len(triggers):
            return images.clone()
        self.placement.check_fits(self.side, images.shape[-1])
        patches = self.patch.to(images.device).expand(len(triggers), -1, -1, -1)
        return self.placement.paste(images, patches, triggers)
