"""CLIP preprocessing split in two: a per-image part that makes uint8 tensors at the model's resolution
(resize the shorter side, bicubic, then centre crop), and a batched part that normalizes on the device.

Keeping images uint8 until the training step is what lets triggers, exports and the batched AutoAugment
work on exact pixel values, and moves the float work to the accelerator.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# CLIP's image statistics (OpenAI's, the values of open_clip.constants). Written out rather than imported:
# importing anything from open_clip loads all of it (2 s), and the data package must stay light for the
# commands that only list or check things. tests/data/test_transforms.py holds them equal to open_clip's.
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> uint8 tensor (3, size, size): RGB, shorter side to ``size`` (bicubic), centre crop."""
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 tensor (3, H, W) -> PIL RGB image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


class Normalize(torch.nn.Module):
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) with CLIP's mean and std."""

    def __init__(self, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std
