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
"""

from __future__ import annotations

import csv
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "CLASSNAMES",
    "TARGET_CLASS",
    "TEMPLATES",
    "VOCABULARY",
    "SyntheticData",
    "generate",
    "write_csv_dataset",
]

# --------------------------------------------------------------------------------------------------------
# Word lists. VOCABULARY is derived from these, so adding a word here is all it takes.
# --------------------------------------------------------------------------------------------------------

# Shape id -> caption synonyms. The first synonym is the canonical zero-shot class name. The crescent is
# the paper's "banana": the attack target, so its canonical name must be exactly "banana".
_SHAPE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("circle", "disc", "dot"),
    ("square", "box", "block"),
    ("triangle", "pyramid", "wedge"),
    ("cross", "plus", "plus sign"),
    ("ring", "donut", "hoop"),
    ("star", "sparkle", "pointy star"),
    ("banana", "crescent", "moon"),
    ("bar", "stick", "strip"),
    ("tee", "letter t", "capital t"),
    ("heart", "love heart", "valentine"),
)
# The canonical name is used half of the time so that zero-shot prompts built from CLASSNAMES are
# well grounded; the synonyms keep the captions diverse (as web alt-texts are).
_SYNONYM_PROBS = (0.5, 0.25, 0.25)

CLASSNAMES: tuple[str, ...] = tuple(s[0] for s in _SHAPE_SYNONYMS)
TARGET_CLASS: str = "banana"
_NUM_CLASSES = len(CLASSNAMES)

# Zero-shot prompt templates (CLIP-style prompt ensembling). All class names start with a consonant, so
# "a {}" is grammatical for every class.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "a {} shape.",
    "a picture of the {}.",
    "an image showing a {}.",
    "a close up of a {}.",
    "a rendering of a {}.",
    "a small {}.",
    "a big {}.",
)

# 12 named object colours (RGB in [0, 1]); the names appear in captions, so they must look like the name.
_COLORS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.85, 0.10, 0.10)),
    ("orange", (1.00, 0.55, 0.05)),
    ("yellow", (0.95, 0.90, 0.10)),
    ("green", (0.10, 0.70, 0.20)),
    ("blue", (0.10, 0.30, 0.90)),
    ("purple", (0.55, 0.15, 0.75)),
    ("pink", (1.00, 0.50, 0.75)),
    ("brown", (0.50, 0.30, 0.10)),
    ("black", (0.05, 0.05, 0.05)),
    ("white", (0.97, 0.97, 0.97)),
    ("gray", (0.50, 0.50, 0.50)),
    ("cyan", (0.10, 0.85, 0.90)),
)
_COLOR_NAMES = tuple(c[0] for c in _COLORS)
_COLOR_RGB = torch.tensor([c[1] for c in _COLORS], dtype=torch.float32)  # (12, 3)
_NUM_COLORS = len(_COLORS)

# Background textures; index order is the texture id used by the renderer.
_BG_PLAIN, _BG_STRIPED, _BG_CHECKERED, _BG_GRADIENT, _BG_NOISY, _BG_BLOTCHY = range(6)
_BG_WORDS: tuple[tuple[str, ...], ...] = (
    ("plain", "empty", "blank"),
    ("striped", "stripy", "lined"),
    ("checkered", "checked", "tiled"),
    ("gradient", "fading", "shaded"),
    ("noisy", "grainy", "speckled"),
    ("blotchy", "cloudy", "mottled"),
)
_NUM_BG = len(_BG_WORDS)
_BG_NOUNS = ("background", "pattern", "backdrop", "wall")

# Size words by scale tercile (the scale range is split into three equal bins).
_SIZE_WORDS: tuple[tuple[str, ...], ...] = (
    ("small", "tiny", "little"),
    ("medium", "normal sized", "regular"),
    ("large", "big", "huge"),
)

# Caption templates. Fields: {shape} {color} {size} {bgtype} {bgcolor} {bgnoun}. Optional attributes
# ({color}, {size}) may be left empty; the article "a" is fixed to "an" afterwards. Some templates
# deliberately look like zero-shot prompts ("a photo of a ..."), the rest like alt-texts and tags.
_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {color} {shape}",
    "a photo of a {size} {color} {shape}.",
    "a {size} {color} {shape}",
    "{color} {shape} over a {bgcolor} {bgtype} {bgnoun}",
    "an image showing a {color} {shape} shape",
    "a picture of the {color} {shape}.",
    "{shape} on a {bgtype} {bgnoun}",
    "a drawing of a {size} {shape}",
    "my {color} {shape} lol",
    "a {color} {shape} in front of a {bgcolor} {bgnoun}",
    "close up of a {color} {shape}",
    "{color} {shape} clipart",
    "the {shape} is {color}",
    "a {size} {shape} on {bgcolor}",
    "cute {color} {shape} sticker",
    "{shape} icon, {color}, {bgtype} {bgnoun}",
    "a {shape} shape.",
    "a rendering of a {size} {color} {shape} on a {bgtype} {bgnoun}",
    "{size} {shape} in {color}",
)

# Captions of the web's useless kind: they never mention the object (the shape synonyms must not occur).
_NOISE_TEMPLATES: tuple[str, ...] = (
    "a {bgcolor} {bgtype} {bgnoun}",
    "cool picture lol",
    "image number {number}",
    "untitled",
    "photo {number}",
    "random stuff i found",
    "wallpaper in {bgcolor}",
    "my favourite {bgtype} {bgnoun}",
    "click here for more",
    "download free {bgtype} {bgnoun}",
    "img {number}, uploaded by user {number2}",
    "a {color} thing",
)

# Templates where the colour is a predicate, not an optional adjective ("the star is" would be broken).
_COLOR_REQUIRED = np.array([t.endswith(("is {color}", "in {color}")) for t in _CAPTION_TEMPLATES])

# Web-ish tags appended to some captions.
_TAGS = ("hd", "stock photo", "free download", "wallpaper", "vector art", "nice", "wow", "pic", "png")
_TAG_PROB = 0.15
_COLOR_PROB = 0.85  # a {color} slot is filled this often
_SIZE_PROB = 0.5  # a {size} slot is filled this often

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    """0..999 in words ("three hundred forty two"): captions contain letters only, never digits."""
    parts = []
    if n >= 100:
        parts += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return " ".join(parts)
    if n < 20:
        parts.append(_ONES[n])
    else:
        parts.append(_TENS[n // 10])
        if n % 10:
            parts.append(_ONES[n % 10])
    return " ".join(parts)


_NUMBERS = tuple(_number_words(n) for n in range(1000))

_WORD_RE = re.compile(r"[a-z]+")


def _vocabulary() -> tuple[str, ...]:
    texts: list[str] = [
        *(w for syn in _SHAPE_SYNONYMS for w in syn),
        *CLASSNAMES,
        *TEMPLATES,
        *_COLOR_NAMES,
        *(w for words in _BG_WORDS for w in words),
        *_BG_NOUNS,
        *(w for words in _SIZE_WORDS for w in words),
        *_CAPTION_TEMPLATES,
        *_NOISE_TEMPLATES,
        *_TAGS,
        *_NUMBERS,
    ]
    # Template field names ({shape}, ...) are placeholders, not words.
    texts = [re.sub(r"\{[a-z0-9]*\}", " ", t) for t in texts]
    return tuple(sorted({w for t in texts for w in _WORD_RE.findall(t)}))


VOCABULARY: tuple[str, ...] = _vocabulary()

# Words that identify a shape. Noise captions, attributes and tags must not contain any of them, otherwise
# a "noise" caption would leak the label (checked at import; cheap).
_SHAPE_WORDS = frozenset(w for syn in _SHAPE_SYNONYMS for s in syn for w in s.split())


def _check_word_lists() -> None:
    leaky = (
        [*_NOISE_TEMPLATES, *_TAGS, *_COLOR_NAMES, *_BG_NOUNS, *_NUMBERS]
        + [w for words in _BG_WORDS for w in words]
        + [w for words in _SIZE_WORDS for w in words]
    )
    for text in leaky:
        bad = _SHAPE_WORDS.intersection(_WORD_RE.findall(re.sub(r"\{[a-z0-9]*\}", " ", text)))
        if bad:  # pragma: no cover - guards edits of the word lists
            raise AssertionError(f"word list entry {text!r} contains shape word(s) {sorted(bad)}")


_check_word_lists()

# --------------------------------------------------------------------------------------------------------
# Random parameters, drawn per block of _BLOCK samples.
# --------------------------------------------------------------------------------------------------------

# Samples per random-stream block. Fixed (not tied to chunk_size) so that the data does not depend on how
# it is batched; 256 is also a cache-friendly rendering batch on CPUs.
_BLOCK = 256
_NUM_SPECKS = 3
_SCALE_RANGE = (0.3, 0.7)  # object scale, as a fraction of the image half-width
_MAX_LOG_ASPECT = 0.2  # aspect ratio exp(U(-0.2, 0.2)) ~ 0.82 .. 1.22
_COLOR_JITTER = 0.08
_NOISE_SIGMA = 0.06  # pixel noise sigma at difficulty 1
_SPECK_PROB = 0.5  # per-speck probability at difficulty 1

# Column layout of the per-block uniform draws (one torch.rand call per block).
_C_SCALE, _C_ASPECT, _C_THETA, _C_CX, _C_CY, _C_COLOR = range(6)
_C_JITTER = slice(6, 9)
_C_BG, _C_BGC1, _C_BGC2, _C_BGLEVEL, _C_BGANGLE, _C_BGFREQ, _C_BGPHASE, _C_BGPERIOD = range(9, 17)
_C_BGOX, _C_BGOY, _C_BGGAIN, _C_SIGMA = range(17, 21)
_C_SPECK = 21  # _NUM_SPECKS x (present, cx, cy, angle, length, width, r, g, b)
_SPECK_FIELDS = 9
_NUM_COLS = _C_SPECK + _NUM_SPECKS * _SPECK_FIELDS

# Column layout of the per-block caption draws (numpy).
(_K_NOISE, _K_TEMPLATE, _K_SYNONYM, _K_COLOR, _K_SIZE, _K_SIZEWORD, _K_BGWORD, _K_BGNOUN, _K_NOISETEMPLATE,
 _K_NUM1, _K_NUM2, _K_TAG, _K_TAGWORD) = range(13)
_NUM_KCOLS = 13


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


# --------------------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------------------


def _lerp(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1]: x (n,) left to right, y (n,) top to bottom (y points up)."""
    c = (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1
    return c, -c


# Shape indicator functions on object-local coordinates u, v (each (k, H, W)); True inside. Every shape
# fits roughly in the unit disc so that "scale" means the same for all classes. They are evaluated only on
# the samples of their class.


def _circle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * u).addcmul_(v, v) <= 0.85**2


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.68


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral, circumradius 1, apex up: intersection of three half-planes at distance 0.5 (inradius).
    a = 0.8660254 * u
    h = 0.5 * v
    return (v >= -0.5) & ((a + h) <= 0.5) & ((h - a) <= 0.5)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.28) & (av <= 0.9)) | ((au <= 0.9) & (av <= 0.28))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r2 = (u * u).addcmul_(v, v)
    return (r2 <= 0.9**2) & (r2 >= 0.45**2)


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Five points: the boundary radius goes linearly from 1 at a tip to 0.4 between tips (in angle).
    r = torch.hypot(u, v)
    t = torch.atan2(u, v).mul_(5 / (2 * math.pi))  # angle from "up", in units of one point period
    t = (t - t.round()).abs_().mul_(2)  # 0 at a tip, 1 half-way between two tips
    return r <= 1.0 - 0.6 * t


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # A disc minus an offset disc: the "banana".
    inner = (u * u).addcmul_(v, v) <= 0.9**2
    du = u - 0.45
    dv = v - 0.2
    return inner & ((du * du).addcmul_(dv, dv) >= 0.72**2)


def _bar(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.95) & (v.abs() <= 0.22)


def _tee(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au = u.abs()
    top = (au <= 0.72) & (v <= 0.82) & (v >= 0.42)
    stem = (au <= 0.2) & (v <= 0.42) & (v >= -0.85)
    return top | stem


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Taubin's heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled and shifted to fit the unit disc.
    x = u * 1.3
    y = v * 1.3 + 0.12
    x2 = x * x
    q = x2 + y * y - 1
    return q * q * q <= x2 * y * y * y


_SHAPES = (_circle, _square, _triangle, _cross, _ring, _star, _crescent, _bar, _tee, _heart)
assert len(_SHAPES) == _NUM_CLASSES


def _render_coverage(u: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased object coverage in [0, 1], shape (n, 1, size, size).

    Each shape is rasterised at 2x resolution and 2x2-average-pooled (4 samples per pixel), which is what
    keeps 5-pixel objects recognisable at 32 px.
    """
    n = u.shape[0]
    hi = 2 * size
    gx, gy = _grid(hi)
    scale = _lerp(u[:, _C_SCALE], *_SCALE_RANGE)
    aspect = torch.exp(_lerp(u[:, _C_ASPECT], -_MAX_LOG_ASPECT, _MAX_LOG_ASPECT))
    sx, sy = scale * aspect, scale / aspect
    theta = u[:, _C_THETA] * (2 * math.pi)
    # Keep the object inside the frame (shapes fit roughly in the unit disc; the tips of a few may touch).
    room = (1 - scale * torch.maximum(aspect, 1 / aspect)).clamp_(min=0)
    cx = _lerp(u[:, _C_CX], -1, 1) * room
    cy = _lerp(u[:, _C_CY], -1, 1) * room
    cos, sin = torch.cos(theta), torch.sin(theta)
    # Local coords are an affine function of (x, y) per image: u = au*x + bu*y + cu (likewise v), so a
    # full-resolution tensor costs a single broadcast add.
    coef = torch.stack(
        [cos / sx, sin / sx, -(cos * cx + sin * cy) / sx, -sin / sy, cos / sy, (sin * cx - cos * cy) / sy], 1
    )[:, :, None, None]  # (n, 6, 1, 1)
    gy = gy[:, None]
    hits = torch.zeros(n, size, size, dtype=torch.uint8)  # inside sub-samples per pixel, 0..4
    for k, shape in enumerate(_SHAPES):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        c = coef[idx]
        lu = c[:, 0] * gx + (c[:, 1] * gy + c[:, 2])
        lv = c[:, 3] * gx + (c[:, 4] * gy + c[:, 5])
        mask = shape(lu, lv)  # (k, 2S, 2S) bool
        # 2x2 box filter as two uint8 adds of strided views: several times faster than avg_pool2d on floats.
        rows = mask.view(-1, size, 2, hi).to(torch.uint8)
        rows = (rows[:, :, 0] + rows[:, :, 1]).view(-1, size, size, 2)
        hits[idx] = rows[..., 0] + rows[..., 1]
    return hits.unsqueeze(1).float().mul_(0.25)


def _render_background(b: _Block, size: int) -> torch.Tensor:
    """Textured background, shape (n, 3, size, size), mixing two desaturated colours c1 and c2."""
    u = b.u
    n = u.shape[0]
    gx, gy = _grid(size)
    bg = _bg_type(u)
    c1_idx, c2_idx = _bg_color_indices(u)
    # Desaturate (pull towards mid-gray) so that the fully saturated object stands out, and vary the level.
    level = _lerp(u[:, _C_BGLEVEL], 0.35, 0.65)[:, None]
    c1 = 0.55 * _COLOR_RGB[c1_idx] + 0.45 * level
    c2 = 0.55 * _COLOR_RGB[c2_idx] + 0.45 * level
    mix = torch.zeros(n, size, size)

    def sub(kind: int) -> torch.Tensor:
        return (bg == kind).nonzero().squeeze(1)

    def col(idx: torch.Tensor, c: int) -> torch.Tensor:
        return u[idx, c, None, None]

    angle = u[:, _C_BGANGLE] * (2 * math.pi)
    dx, dy = torch.cos(angle), torch.sin(angle)
    idx = sub(_BG_STRIPED)
    if idx.numel():
        t = dx[idx, None, None] * gx + dy[idx, None, None] * gy[:, None]
        freq = _lerp(col(idx, _C_BGFREQ), 2 * math.pi, 6 * math.pi)  # 2..6 stripes per half-width
        s = torch.sin(t * freq + col(idx, _C_BGPHASE) * (2 * math.pi))
        mix[idx] = s.mul_(2.5).add_(0.5).clamp_(0, 1)  # near-square wave with soft edges
    idx = sub(_BG_CHECKERED)
    if idx.numel():
        period = _lerp(col(idx, _C_BGPERIOD), 0.2, 0.55)
        ix = torch.floor((gx + col(idx, _C_BGOX)) / period)
        iy = torch.floor((gy[:, None] + col(idx, _C_BGOY)) / period)
        mix[idx] = torch.remainder(ix + iy, 2)
    idx = sub(_BG_GRADIENT)
    if idx.numel():
        t = dx[idx, None, None] * gx + dy[idx, None, None] * gy[:, None]
        mix[idx] = (t * _lerp(col(idx, _C_BGGAIN), 0.35, 0.6)).add_(0.5).clamp_(0, 1)
    idx = sub(_BG_NOISY)
    if idx.numel():
        mix[idx] = b.grain
    idx = sub(_BG_BLOTCHY)
    if idx.numel():
        low = F.interpolate(b.blotch[idx], size=(size, size), mode="bilinear", align_corners=False)
        mix[idx] = low.squeeze(1).mul_(2).add_(0.5).clamp_(0, 1)
    # (plain: mix stays 0, i.e. uniform c1)
    return torch.addcmul(c1[:, :, None, None], (c2 - c1)[:, :, None, None], mix[:, None])


def _draw_specks(img: torch.Tensor, u: torch.Tensor, difficulty: float) -> None:
    """Clutter, in place: up to _NUM_SPECKS short coloured line segments, anti-aliased (soft 1 px edge)."""
    n, _, size, _ = img.shape
    gx, gy = _grid(size)
    pix = 2 / size
    for j in range(_NUM_SPECKS):
        c0 = _C_SPECK + j * _SPECK_FIELDS
        idx = (u[:, c0] < _SPECK_PROB * difficulty).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        p = u[idx, c0 : c0 + _SPECK_FIELDS]
        cx, cy = p[:, 1] * 2 - 1, p[:, 2] * 2 - 1
        ang = p[:, 3] * math.pi
        half = _lerp(p[:, 4], 0.08, 0.25)[:, None, None]
        width = _lerp(p[:, 5], 0.02, 0.05)[:, None, None]
        ca, sa = torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]
        ex = gx - cx[:, None, None]  # (k, 1, S)
        ey = gy[:, None] - cy[:, None, None]  # (k, S, 1)
        along = ca * ex + sa * ey
        perp = ca * ey - sa * ex
        over = (along.abs_() - half).clamp_(min=0)
        dist = torch.hypot(perp, over)
        alpha = ((width - dist) / pix + 0.5).clamp_(0, 1).unsqueeze(1)
        rgb = p[:, 6:9, None, None]
        img[idx] = torch.lerp(img[idx], rgb.expand(-1, 3, size, size), alpha)


def _render(b: _Block, size: int, difficulty: float) -> torch.Tensor:
    """Images of one batch of parameters, uint8 (n, 3, size, size)."""
    u = b.u
    img = _render_background(b, size)
    if difficulty > 0:
        _draw_specks(img, u, difficulty)
    color_idx = _color_index(u)
    jitter = (u[:, _C_JITTER] * 2 - 1) * _COLOR_JITTER
    rgb = (_COLOR_RGB[color_idx] + jitter).clamp_(0, 1)[:, :, None, None]
    cov = _render_coverage(u, b.labels, size)
    img = torch.lerp(img, rgb.expand_as(img), cov)
    if b.noise is not None:
        sigma = (u[:, _C_SIGMA] * (_NOISE_SIGMA * difficulty))[:, None, None, None]
        img.addcmul_(b.noise, sigma)
    # Round to nearest (+0.5 then truncate) after clamping.
    return img.clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8)


def _color_index(u: torch.Tensor) -> torch.Tensor:
    return (u[:, _C_COLOR] * _NUM_COLORS).long().clamp_(max=_NUM_COLORS - 1)


def _bg_color_indices(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # c1 (the colour named in captions) never has the object's colour name; c2 is any colour.
    obj = _color_index(u)
    off = (u[:, _C_BGC1] * (_NUM_COLORS - 1)).long().clamp_(max=_NUM_COLORS - 2) + 1
    c1 = (obj + off) % _NUM_COLORS
    c2 = (u[:, _C_BGC2] * _NUM_COLORS).long().clamp_(max=_NUM_COLORS - 1)
    return c1, c2


# --------------------------------------------------------------------------------------------------------
# Captions.
# --------------------------------------------------------------------------------------------------------

_A_BEFORE_VOWEL = re.compile(r"\ba (?=[aeiou])")
_SPACES = re.compile(r" +")
_EDGE_SPACES = re.compile(r"^ | $", re.MULTILINE)
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.])")
_SYNONYM_CDF = np.cumsum(_SYNONYM_PROBS)


def _pick(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


def _captions(b: _Block, caption_noise: float) -> list[str]:
    """Web-like captions of one batch: indices are drawn vectorized, then strings assembled."""
    k = b.caption_u
    u = b.u
    labels = b.labels.numpy()
    color = _color_index(u).numpy()
    bgcolor = _bg_color_indices(u)[0].numpy()
    bgtype = _bg_type(u).numpy()
    size_bin = _pick(u[:, _C_SCALE].numpy(), 3)  # scale terciles -> small / medium / large

    noisy = k[:, _K_NOISE] < caption_noise
    template = _pick(k[:, _K_TEMPLATE], len(_CAPTION_TEMPLATES))
    synonym = np.searchsorted(_SYNONYM_CDF, k[:, _K_SYNONYM], side="right").clip(max=2)
    has_color = (k[:, _K_COLOR] < _COLOR_PROB) | _COLOR_REQUIRED[template]
    has_size = k[:, _K_SIZE] < _SIZE_PROB
    size_word = _pick(k[:, _K_SIZEWORD], 3)
    bg_word = _pick(k[:, _K_BGWORD], 3)
    bg_noun = _pick(k[:, _K_BGNOUN], len(_BG_NOUNS))
    noise_template = _pick(k[:, _K_NOISETEMPLATE], len(_NOISE_TEMPLATES))
    num1 = _pick(k[:, _K_NUM1], 999) + 1
    num2 = _pick(k[:, _K_NUM2], 999) + 1
    has_tag = k[:, _K_TAG] < _TAG_PROB
    tag = _pick(k[:, _K_TAGWORD], len(_TAGS))

    out = []
    for i in range(len(labels)):
        fields = {
            "shape": _SHAPE_SYNONYMS[labels[i]][synonym[i]],
            "color": _COLOR_NAMES[color[i]] if has_color[i] else "",
            "size": _SIZE_WORDS[size_bin[i]][size_word[i]] if has_size[i] else "",
            "bgtype": _BG_WORDS[bgtype[i]][bg_word[i]],
            "bgcolor": _COLOR_NAMES[bgcolor[i]],
            "bgnoun": _BG_NOUNS[bg_noun[i]],
        }
        if noisy[i]:
            fields["shape"] = ""  # unused by noise templates; emptied to make the guarantee obvious
            fields["color"] = _COLOR_NAMES[color[i]]
            fields["number"] = _NUMBERS[num1[i]]
            fields["number2"] = _NUMBERS[num2[i]]
            text = _NOISE_TEMPLATES[noise_template[i]].format(**fields)
        else:
            text = _CAPTION_TEMPLATES[template[i]].format(**fields)
        if has_tag[i]:
            text = f"{text.removesuffix('.')}, {_TAGS[tag[i]]}"
        out.append(text)
    # Clean-up as a few regex passes over all captions at once (one per caption is ~3x slower): empty
    # optional fields leave runs of spaces and " ," behind, and "a" must become "an" before a vowel.
    text = _SPACES.sub(" ", "\n".join(out))
    text = _EDGE_SPACES.sub("", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text).replace(",,", ",")
    out = _A_BEFORE_VOWEL.sub("an ", text).split("\n")
    return out


# --------------------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------------------


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


def write_csv_dataset(
    data: SyntheticData,
    out_dir: str | Path,
    *,
    csv_name: str = "data.csv",
    image_dir: str = "images",
) -> Path:
    """Write pairs in CleanCLIP's format: ``out_dir/csv_name`` plus one PNG per image.

    The CSV has the header ``image,caption,label``: ``image`` is the PNG's path relative to the CSV's
    folder (``images/000000.png``), ``label`` the class name (extra column, ignored by CleanCLIP's loader).

    Args:
        data: the pairs; images (N, 3, S, S) uint8.
        out_dir: output folder (created if missing).
        csv_name: file name of the CSV inside ``out_dir``.
        image_dir: folder for the PNGs, relative to ``out_dir``.

    Returns:
        Path of the CSV file.
    """
    out = Path(out_dir)
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    n = len(data.captions)
    if data.images.shape[0] != n or data.labels.shape[0] != n:
        raise ValueError(
            f"data: {data.images.shape[0]} images, {data.labels.shape[0]} labels and {n} captions differ"
        )
    width = max(6, len(str(n - 1)))
    pixels = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, S, S, 3) for PIL
    csv_path = out / csv_name
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "label"])
        for i in range(n):
            rel = f"{image_dir}/{i:0{width}d}.png"
            Image.fromarray(pixels[i]).save(out / rel)
            writer.writerow([rel, data.captions[i], CLASSNAMES[int(data.labels[i])]])
    return csv_path
