"""Random parameters of the synthetic generator, drawn per block of :data:`_BLOCK` samples, and decoders.

Every random choice of a sample (pose, colours, background, clutter, noise, caption choices) comes from
the block's private generators seeded by ``(seed, block index)``; see the package docstring for the
determinism guarantees this gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clipbackdoor.data.synthetic.captions import (
    _BG_NOISY,
    _NUM_BG,
    _NUM_CLASSES,
    _NUM_COLORS,
    _NUM_KCOLS,
    _assemble_captions,
    _pick,
)

# Samples per random-stream block. Fixed (not tied to chunk_size) so that the data does not depend on how
# it is batched; 256 is also a cache-friendly rendering batch on CPUs.
_BLOCK = 256
_NUM_SPECKS = 3

# Column layout of the per-block uniform draws (one torch.rand call per block).
_C_SCALE, _C_ASPECT, _C_THETA, _C_CX, _C_CY, _C_COLOR = range(6)
_C_JITTER = slice(6, 9)
_C_BG, _C_BGC1, _C_BGC2, _C_BGLEVEL, _C_BGANGLE, _C_BGFREQ, _C_BGPHASE, _C_BGPERIOD = range(9, 17)
_C_BGOX, _C_BGOY, _C_BGGAIN, _C_SIGMA = range(17, 21)
_C_SPECK = 21  # _NUM_SPECKS x (present, cx, cy, angle, length, width, r, g, b)
_SPECK_FIELDS = 9
_NUM_COLS = _C_SPECK + _NUM_SPECKS * _SPECK_FIELDS


def _seed_entropy(seed: int, block: int, stream: int) -> list[int]:
    # SeedSequence needs non-negative entropy; keep the sign as a separate word so -1 != 1.
    return [abs(seed), int(seed < 0), block, stream]


def _torch_generator(seed: int, block: int) -> torch.Generator:
    state = np.random.SeedSequence(_seed_entropy(seed, block, 0)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _numpy_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(_seed_entropy(seed, block, 1)))


@dataclass
class _Block:
    """Random parameters of _BLOCK consecutive samples (all tensors have leading dim _BLOCK)."""

    u: torch.Tensor  # (B, _NUM_COLS) float32 uniforms in [0, 1)
    labels: torch.Tensor  # (B,) int64
    blotch: torch.Tensor  # (B, 1, 4, 4) float32 normal, low-res field of the blotchy texture
    grain: torch.Tensor  # (K, S, S) float32 uniforms, per-pixel field of the K noisy-texture samples
    noise: torch.Tensor | None  # (B, 3, S, S) float32 normal pixel noise (None when difficulty == 0)
    caption_u: np.ndarray  # (B, _NUM_KCOLS) float64 uniforms for caption choices


def _draw_block(seed: int, block: int, image_size: int, difficulty: float) -> _Block:
    g = _torch_generator(seed, block)
    u = torch.rand(_BLOCK, _NUM_COLS, generator=g)
    # Stratified labels: each block holds every class 25 or 26 times (rotating which get 26), in random
    # order, so any dataset is balanced to within a couple of samples per class, not just in expectation.
    base = (torch.arange(_BLOCK) + block * _BLOCK) % _NUM_CLASSES
    labels = base[torch.randperm(_BLOCK, generator=g)]
    blotch = torch.randn(_BLOCK, 1, 4, 4, generator=g)
    n_grain = int((_bg_type(u) == _BG_NOISY).sum())
    grain = torch.rand(n_grain, image_size, image_size, generator=g)
    # Drawn last and only when used: the draws above do not depend on difficulty, so changing the
    # difficulty changes how images are degraded, not what they show.
    noise = torch.randn(_BLOCK, 3, image_size, image_size, generator=g) if difficulty > 0 else None
    caption_u = _numpy_rng(seed, block).random((_BLOCK, _NUM_KCOLS))
    return _Block(u, labels, blotch, grain, noise, caption_u)


def _bg_type(u: torch.Tensor) -> torch.Tensor:
    return (u[:, _C_BG] * _NUM_BG).long().clamp_(max=_NUM_BG - 1)


def _slice_block(b: _Block, lo: int, hi: int) -> _Block:
    noisy = _bg_type(b.u) == _BG_NOISY
    g0 = int(noisy[:lo].sum())
    g1 = g0 + int(noisy[lo:hi].sum())
    return _Block(
        b.u[lo:hi],
        b.labels[lo:hi],
        b.blotch[lo:hi],
        b.grain[g0:g1],
        None if b.noise is None else b.noise[lo:hi],
        b.caption_u[lo:hi],
    )



def _color_index(u: torch.Tensor) -> torch.Tensor:
    return (u[:, _C_COLOR] * _NUM_COLORS).long().clamp_(max=_NUM_COLORS - 1)


def _bg_color_indices(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # c1 (the colour named in captions) never has the object's colour name; c2 is any colour.
    obj = _color_index(u)
    off = (u[:, _C_BGC1] * (_NUM_COLORS - 1)).long().clamp_(max=_NUM_COLORS - 2) + 1
    c1 = (obj + off) % _NUM_COLORS
    c2 = (u[:, _C_BGC2] * _NUM_COLORS).long().clamp_(max=_NUM_COLORS - 1)
    return c1, c2


def _captions(b: _Block, caption_noise: float) -> list[str]:
    """Captions of one batch of parameters: the attributes the images show, put into words."""
    u = b.u
    return _assemble_captions(
        b.caption_u,
        b.labels.numpy(),
        _color_index(u).numpy(),
        _bg_color_indices(u)[0].numpy(),
        _bg_type(u).numpy(),
        _pick(u[:, _C_SCALE].numpy(), 3),  # scale terciles -> small / medium / large
        caption_noise,
    )
