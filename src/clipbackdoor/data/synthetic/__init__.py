"""A deterministic, vectorized generator of image-caption pairs that behaves like a tiny web crawl.

This is the toolkit's embedded default dataset: it lets the whole poison -> pre-train -> clean -> evaluate
pipeline run on a laptop CPU with a tiny CLIP at 32x32 px. It is designed to be *learnable but not
trivial*, because the paper's effect (CleanCLIP removes a backdoor from a model pre-trained with a weak
objective but not from one pre-trained with a strong one) only shows up when the model actually learns
image-text alignment:

* **Images**: one of 10 shapes (defined by implicit functions in object-local coordinates) with random
  scale, position, rotation and aspect ratio, in one of 12 named colours, on one of 6 background textures,
  with optional clutter ("specks") and pixel noise. Shapes are rendered at 2x and average-pooled, so edges
  are anti-aliased and small objects keep their silhouette.
* **Captions**: web-like alt-texts from ~20 templates with shape synonyms, colour / size / background
  attributes and tag words; a fraction (``caption_noise``) never mention the object at all, like real
  crawled pairs.
* **Zero-shot metadata**: :data:`CLASSNAMES`, :data:`TEMPLATES` and :data:`TARGET_CLASS`. The crescent
  plays the paper's ``banana`` (the attack's target class), so its canonical name is ``banana``.
* :data:`VOCABULARY`: every word the generator, the prompt templates and the class names can produce,
  for the word-level tokenizer.

Determinism: every random choice is drawn per fixed block of :data:`_BLOCK` consecutive samples from
private generators seeded by ``(seed, block index)``. The output is therefore a pure function of the seed
and the sample index: bit-identical across calls, independent of torch's global RNG, of the number of
threads and of ``chunk_size``; and ``generate(n, seed=s)`` is a prefix of ``generate(m, seed=s)`` for
``n < m`` (with the other arguments equal).

Layout: ``captions`` (word lists, caption templates and assembly, :data:`VOCABULARY`), ``params`` (the
per-block random parameters and their decoding), ``shapes`` (shape functions and image rendering) and
``io`` (:func:`write_csv_dataset`); this module holds the public API.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from clipbackdoor.data.synthetic.captions import (
    _SHAPE_SYNONYMS,  # re-exported: the tests check captions against the synonym lists
    CLASSNAMES,
    TARGET_CLASS,
    TEMPLATES,
    VOCABULARY,
)
from clipbackdoor.data.synthetic.io import write_csv_dataset
from clipbackdoor.data.synthetic.params import _BLOCK, _captions, _draw_block, _slice_block
from clipbackdoor.data.synthetic.shapes import _render

__all__ = [
    "CLASSNAMES",
    "TARGET_CLASS",
    "TEMPLATES",
    "VOCABULARY",
    "SyntheticData",
    "generate",
    "write_csv_dataset",
]


@dataclass
class SyntheticData:
    """Image-caption pairs with class labels.

    Attributes:
        images: uint8 tensor of shape (N, 3, S, S), RGB in [0, 255].
        labels: int64 tensor of shape (N,), index into :data:`CLASSNAMES`.
        captions: N caption strings (lowercase letters, spaces, "," and ".").
    """

    images: torch.Tensor
    labels: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def _check_number(name: str, value: object, lo: float, hi: float | None = None, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not (value >= lo and (hi is None or value <= hi)):  # also rejects NaN
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def generate(
    num_samples: int,
    *,
    seed: int,
    image_size: int = 32,
    difficulty: float = 0.5,
    caption_noise: float = 0.1,
    chunk_size: int = 4096,
) -> SyntheticData:
    """Generate ``num_samples`` image-caption pairs.

    The result is a pure function of the arguments other than ``chunk_size`` (bit-identical on CPU across
    calls, thread counts and torch's global RNG state), and sample ``i`` does not depend on
    ``num_samples``: a smaller dataset with the same seed is a prefix of a larger one, so use different
    seeds for train and test splits.

    Args:
        num_samples: number of pairs N (>= 1).
        seed: any integer.
        image_size: side S of the square images in pixels (>= 8).
        difficulty: in [0, 1]; scales clutter (up to 3 specks, each with probability 0.5 * difficulty)
            and pixel noise (sigma up to 0.06 * difficulty). Shapes, colours, poses and backgrounds do not
            depend on it.
        caption_noise: in [0, 1]; the fraction (in expectation) of captions that never mention the shape.
        chunk_size: at most this many images are rendered per vectorized step; it bounds the rendering
            memory and never changes the output. Steps never exceed one random-stream block (256
            images, also the fastest batch for CPU caches), so values above 256 act like 256. Random
            fields are drawn per block: peak memory is about 256 * 3 * S * S * 4 bytes plus the output.

    Returns:
        SyntheticData with images (N, 3, S, S) uint8, labels (N,) int64 and N captions.

    Raises:
        ValueError: an argument is out of range (the message names it).
    """
    _check_number("num_samples", num_samples, 1, integer=True)
    _check_number("seed", seed, -math.inf, integer=True)  # any integer
    _check_number("image_size", image_size, 8, integer=True)
    _check_number("difficulty", difficulty, 0, 1)
    _check_number("caption_noise", caption_noise, 0, 1)
    _check_number("chunk_size", chunk_size, 1, integer=True)
    num_samples, seed, image_size, chunk_size = int(num_samples), int(seed), int(image_size), int(chunk_size)
    difficulty, caption_noise = float(difficulty), float(caption_noise)

    images = torch.empty(num_samples, 3, image_size, image_size, dtype=torch.uint8)
    labels = torch.empty(num_samples, dtype=torch.int64)
    captions: list[str] = []
    # Rendering goes block by block (never across blocks: concatenating them costs more than it saves, and
    # 256 images keep the working set in CPU caches); chunk_size can only make the steps smaller.
    step = min(chunk_size, _BLOCK)
    for blk in range(-(-num_samples // _BLOCK)):
        block = _draw_block(seed, blk, image_size, difficulty)
        start = blk * _BLOCK
        n_in = min(_BLOCK, num_samples - start)  # samples of this block that are wanted
        for lo in range(0, n_in, step):
            hi = min(lo + step, n_in)
            b = _slice_block(block, lo, hi) if (lo, hi) != (0, _BLOCK) else block
            images[start + lo : start + hi] = _render(b, image_size, difficulty)
            labels[start + lo : start + hi] = b.labels
            captions += _captions(b, caption_noise)
    return SyntheticData(images=images, labels=labels, captions=captions)
