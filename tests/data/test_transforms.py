"""CLIP preprocessing: the statistics are open_clip's, the normalization uses them."""

import open_clip.constants
import torch

from clipbackdoor.data.transforms import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, Normalize


def test_statistics_are_open_clips():
    assert OPENAI_DATASET_MEAN == open_clip.constants.OPENAI_DATASET_MEAN
    assert OPENAI_DATASET_STD == open_clip.constants.OPENAI_DATASET_STD


def test_normalize_maps_uint8_pixels_with_clip_statistics():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = Normalize()(pixels)
    for c, value in enumerate((0, 128, 255)):
        expected = (value / 255.0 - OPENAI_DATASET_MEAN[c]) / OPENAI_DATASET_STD[c]
        assert torch.allclose(out[0, c], torch.full((2, 2), expected), atol=1e-5)
