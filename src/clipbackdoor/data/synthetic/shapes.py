"""Image rendering of the synthetic generator: implicit shape functions, backgrounds, clutter and noise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipbackdoor.data.synthetic.captions import (
    _BG_BLOTCHY,
    _BG_CHECKERED,
    _BG_GRADIENT,
    _BG_NOISY,
    _BG_STRIPED,
    _COLORS,
    _NUM_CLASSES,
)
from clipbackdoor.data.synthetic.params import (
    _C_ASPECT,
    _C_BGANGLE,
    _C_BGFREQ,
    _C_BGGAIN,
    _C_BGLEVEL,
    _C_BGOX,
    _C_BGOY,
    _C_BGPERIOD,
    _C_BGPHASE,
    _C_CX,
    _C_CY,
    _C_JITTER,
    _C_SCALE,
    _C_SIGMA,
    _C_SPECK,
    _C_THETA,
    _NUM_SPECKS,
    _SPECK_FIELDS,
    _bg_color_indices,
    _bg_type,
    _Block,
    _color_index,
)

_SCALE_RANGE = (0.3, 0.7)  # object scale, as a fraction of the image half-width
_MAX_LOG_ASPECT = 0.2  # aspect ratio exp(U(-0.2, 0.2)) ~ 0.82 .. 1.22
_COLOR_JITTER = 0.08
_NOISE_SIGMA = 0.06  # pixel noise sigma at difficulty 1
_SPECK_PROB = 0.5  # per-speck probability at difficulty 1
_COLOR_RGB = torch.tensor([c[1] for c in _COLORS], dtype=torch.float32)  # (12, 3)


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
