"""WaNet: the exact pixel-level behaviour of the warping trigger, checked against a float64 reference written
from the description of the originals (system.md 1.2, ``warped``)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipbackdoor.poison import ATTACKS
from clipbackdoor.poison.wanet import WaNet, noise_grid
from clipbackdoor.registry import ConfigError

SIZE = 32
A = -0.75  # PyTorch's bicubic (Keys) coefficient


def _images(n=4, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _control_points(k: int, seed: int) -> np.ndarray:
    """The same U(-1, 1) draws as the attack, normalised by their mean |value|: float64 (2, k, k)."""
    ins = (torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(seed)) * 2 - 1)[0].double().numpy()
    return ins / np.abs(ins).mean()


def _cubic(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return ((A + 2) * x - (A + 3)) * x * x + 1
    if x < 2:
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    return 0.0


def _cubic_slope(u: np.ndarray) -> np.ndarray:
    """d/du of the bicubic kernel at distance u in [0, 2]."""
    return np.where(u <= 1, 3 * (A + 2) * u**2 - 2 * (A + 3) * u, 3 * A * u**2 - 10 * A * u + 8 * A)


def _upsample_matrix(k: int, size: int) -> np.ndarray:
    """(size, k): bicubic interpolation with align_corners=True, border taps clamped to the edge."""
    m = np.zeros((size, k))
    for i in range(size):
        src = i * (k - 1) / (size - 1)
        i0 = min(math.floor(src), k - 1)
        for j in range(-1, 3):
            m[i, min(max(i0 + j, 0), k - 1)] += _cubic(src - i0 - j)
    return m


def _reference(images: torch.Tensor, k: int, s: float, seed: int = 0, rescale: float = 1.0, noise=None):
    """float64 WaNet: noise (H, H, 2) = bicubic(control points); grid = clamp((id + s noise / H) r, -1, 1);
    bilinear sampling at grid, pixel = (g + 1) / 2 * (H - 1). Returns uint8 like the attack."""
    size = images.shape[-1]
    if noise is None:
        m = _upsample_matrix(min(k, size), size)
        noise = np.stack([m @ c @ m.T for c in _control_points(min(k, size), seed)], axis=-1)
    ident = np.linspace(-1, 1, size)
    gx = np.clip((ident[None, :] + s * noise[..., 0] / size) * rescale, -1, 1)
    gy = np.clip((ident[:, None] + s * noise[..., 1] / size) * rescale, -1, 1)
    px, py = (gx + 1) / 2 * (size - 1), (gy + 1) / 2 * (size - 1)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    img = images.double().numpy() / 255
    out = np.zeros_like(img)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - np.abs(px - xi)) * (1 - np.abs(py - yi))
            inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            out += np.where(inside, w, 0) * img[:, :, yi.clip(0, size - 1), xi.clip(0, size - 1)]
    return np.round(np.clip(out, 0, 1) * 255)


def _displacement_px(attack: WaNet, size: int) -> torch.Tensor:
    """(H, H, 2) displacement in pixels that the attack's grid applies (x first)."""
    ident = torch.linspace(-1, 1, size, dtype=torch.float64)
    identity = torch.stack(torch.meshgrid(ident, ident, indexing="xy"), -1)
    return (attack.grid(size)[0].double() - identity) * (size - 1) / 2


@pytest.mark.parametrize("k, s, seed, rescale", [(224, 0.6, 0, 1), (4, 1.0, 3, 1), (8, 2.5, 1, 1), (1, 1.0, 0, 1),
                                                  (32, 1.0, 5, 0.9)])
def test_matches_float64_reference_within_one_level(k, s, seed, rescale):
    images = _images()
    out = WaNet(k=k, s=s, field_seed=seed, grid_rescale=rescale).apply(images, [{}] * len(images))
    ref = _reference(images, k, s, seed, rescale)
    diff = np.abs(out.double().numpy() - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_ramp_images_read_back_the_displacement():
    # On a linear ramp bilinear sampling is exact: the warped ramp is the sampled coordinate itself. This pins
    # down the axis order (grid[..., 0] moves along x) and the pixel scale (H - 1) / 2 of the grid units.
    attack = WaNet(k=4, s=3.0)
    ramp = torch.arange(SIZE, dtype=torch.float64) * 8
    image = torch.stack([ramp.expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE), torch.zeros(SIZE, SIZE)])
    out = attack.apply(image.to(torch.uint8)[None], [{}])[0].double() / 8
    sampled = (attack.grid(SIZE)[0].double() + 1) / 2 * (SIZE - 1)
    assert (out[0] - sampled[..., 0]).abs().max() <= 0.5 / 8 + 1e-6
    assert (out[1] - sampled[..., 1]).abs().max() <= 0.5 / 8 + 1e-6
    assert (out[2] == 0).all()


def test_displacement_is_bounded_as_the_formula_says():
    # Pixel displacement = s * noise * (H - 1) / (2 H); |noise| <= max|control point| x (sum of |bicubic
    # weights| = 1.375 per axis), and is exactly the control points when k = H (same-size upsampling).
    for k, s in [(SIZE, 0.6), (4, 1.0), (8, 2.0)]:
        attack = WaNet(k=k, s=s)
        d = _displacement_px(attack, SIZE)
        peak = np.abs(_control_points(k, 0)).max()
        scale = s * (SIZE - 1) / (2 * SIZE)
        assert d.abs().max() <= scale * peak * 1.375**2 + 1e-5
        if k == SIZE:
            interior = d[1:-1, 1:-1]  # no clamping there: |d| <= s (H - 1) / (2 H) * 2 < s
            expected = torch.from_numpy(_control_points(k, 0)).permute(1, 2, 0)[1:-1, 1:-1] * scale
            assert torch.allclose(interior, expected, atol=1e-5)
            # Mean |control point| is 1, so a pixel moves ~s/2 px per axis on average and < ~s px at most.
            assert 0.4 * s < d.abs().mean() < 0.6 * s and d.abs().max() < s


def test_field_is_smooth_for_small_k():
    # Neighbouring pixels differ by at most (k - 1) / (H - 1) x max|c| x max_t sum_j |w'(t - j)| x 1.375.
    t = np.linspace(0, 1, 1001)
    lipschitz = np.stack([np.abs(_cubic_slope(np.abs(t - j))) for j in (-1, 0, 1, 2)]).sum(0).max()
    noise = noise_grid(4, SIZE, 0)[0].double()
    bound = 3 / (SIZE - 1) * np.abs(_control_points(4, 0)).max() * lipschitz * 1.375
    step = max((noise[1:] - noise[:-1]).abs().max(), (noise[:, 1:] - noise[:, :-1]).abs().max())
    assert step <= bound + 1e-5
    assert step < 0.3 * noise.abs().max()
    # k = H is the originals' per-pixel jitter: neighbours are independent.
    rough = noise_grid(SIZE, SIZE, 0)[0]
    assert (rough[1:] - rough[:-1]).abs().max() > noise.abs().max()


def test_zero_strength_is_the_identity_and_constant_images_stay_constant():
    images = _images()
    assert torch.equal(WaNet(s=0).apply(images, [{}] * 4), images)
    constant = torch.full((2, 3, SIZE, SIZE), 77, dtype=torch.uint8)
    constant[1] = 255
    for k, s in [(SIZE, 1.0), (4, 5.0), (1, 30.0)]:  # clamped at the border, never sampling outside
        assert torch.equal(WaNet(k=k, s=s).apply(constant, [{}, {}]), constant)


def test_textured_images_change_everywhere_but_keep_their_statistics():
    images = _images()
    out = WaNet().apply(images, [{}] * 4)
    changed = (out != images).float().mean()
    assert changed > 0.5  # a per-pixel jitter of ~0.3 px moves nearly every pixel of random noise
    assert (out.float().mean() - images.float().mean()).abs() < 2


def test_determinism_from_the_field_seed():
    images = _images()
    a = WaNet(field_seed=7).apply(images, [{}] * 4)
    assert torch.equal(a, WaNet(field_seed=7).apply(images, [{}] * 4))
    assert not torch.equal(a, WaNet(field_seed=8).apply(images, [{}] * 4))
    # The trigger is the field, not a per-image draw.
    assert WaNet().sample_trigger(np.random.default_rng(0), SIZE) == {}


def test_params_round_trip_through_the_registry():
    attack = ATTACKS.build({"name": "wanet", "k": 4, "s": 1.0, "field_seed": 3, "target": "beaver"})
    params = json.loads(json.dumps(attack.params()))
    assert params["k"] == 4 and params["s"] == 1.0 and params["grid_rescale"] == 1 and params["field_seed"] == 3
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    images = _images()
    assert torch.equal(attack.apply(images, [{}] * 4), rebuilt.apply(images, [{}] * 4))
    assert rebuilt.target == "beaver"


def test_batched_equals_one_by_one_and_input_untouched():
    attack = WaNet(k=8, s=2.0)
    images = _images(6)
    before = images.clone()
    out = attack.apply(images, [{}] * 6)
    assert torch.equal(images, before)
    assert torch.equal(out, torch.cat([attack.apply(images[i : i + 1], [{}]) for i in range(6)]))
    assert torch.equal(attack.apply(images, []), images)


def test_k_larger_than_the_image_uses_one_control_point_per_pixel():
    assert WaNet(k=224).effective_k(SIZE) == SIZE and WaNet(k=4).effective_k(SIZE) == 4
    images = _images()
    assert torch.equal(WaNet(k=224).apply(images, [{}] * 4), WaNet(k=SIZE).apply(images, [{}] * 4))
    assert WaNet(k=224).params()["k"] == 224  # the configured value is what the manifest keeps


def _write_field(path, size=SIZE, seed=0):
    ins = torch.rand(1, 2, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    noise = F.interpolate(ins / ins.abs().mean(), size=size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    torch.save(noise, path)
    return noise


def test_original_noise_grid_file_is_used_and_a_changed_file_refused(tmp_path):
    path = tmp_path / f"noise_grid_k={SIZE}_s=1.0_inputheight={SIZE}_gridrescale=1.pt"
    noise = _write_field(path, seed=11)
    attack = ATTACKS.build({"name": "wanet", "k": SIZE, "s": 1.0, "field": str(path)})
    images = _images()
    out = attack.apply(images, [{}] * 4)
    # The originals' own steps on the file's tensor (rounded instead of PIL's truncation).
    array1d = torch.linspace(-1, 1, steps=SIZE)
    x, y = torch.meshgrid(array1d, array1d, indexing="ij")
    grid = torch.clamp((torch.stack((y, x), 2)[None, ...] + 1.0 * noise / SIZE) * 1, -1, 1)
    original = F.grid_sample(images.float() / 255, grid.repeat(4, 1, 1, 1), align_corners=True)
    assert torch.equal(out, (original.clamp(0, 1) * 255).round().to(torch.uint8))
    assert np.abs(out.double().numpy() - _reference(images, SIZE, 1.0, noise=noise[0].double().numpy())).max() <= 1

    params = json.loads(json.dumps(attack.params()))
    assert params["field"] == str(path)
    assert params["field_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(ATTACKS.build(params).apply(images, [{}] * 4), out)
    _write_field(path, seed=12)
    with pytest.raises(ConfigError, match=r"attack\.field: .*changed"):
        ATTACKS.build(params)
    # The file replaces the drawn field, so it is not the field_seed's one.
    assert not torch.equal(out, WaNet(k=SIZE, s=1.0).apply(images, [{}] * 4))


def test_field_file_checks(tmp_path):
    named = tmp_path / f"noise_grid_k=224_s=0.6_inputheight={SIZE}_gridrescale=1.pt"
    _write_field(named)
    with pytest.raises(ConfigError, match=r"attack\.s: 1\.0 disagrees"):
        WaNet(s=1.0, field=str(named))
    attack = WaNet(field=str(named))  # k=224, s=0.6: as the name says
    with pytest.raises(ConfigError, match=r"attack\.field: the field file is 32 px"):
        attack.apply(_images(size=16), [{}])
    with pytest.raises(ConfigError, match=r"attack\.field: .*is 32 px"):
        attack.sample_trigger(np.random.default_rng(0), 16)
    other = tmp_path / "my_field.pt"
    torch.save(torch.zeros(1, SIZE, SIZE, 3), other)
    with pytest.raises(ConfigError, match=r"attack\.field: .*1 x H x H x 2"):
        WaNet(field=str(other))
    torch.save({"noise_grid": torch.zeros(1, SIZE, SIZE, 2)}, other)  # a WaNet checkpoint's entry
    assert torch.equal(WaNet(field=str(other)).apply(_images(), [{}] * 4), _images())


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, r"attack\.k"),
    ({"k": 2.5}, r"attack\.k"),
    ({"k": True}, r"attack\.k"),
    ({"s": -0.1}, r"attack\.s"),
    ({"s": float("nan")}, r"attack\.s"),
    ({"s": "0.6"}, r"attack\.s"),
    ({"grid_rescale": 0}, r"attack\.grid_rescale"),
    ({"field_seed": -1}, r"attack\.field_seed"),
    ({"field_seed": 2**64}, r"attack\.field_seed"),
    ({"field": "/nonexistent/noise_grid.pt"}, r"attack\.field: file not found"),
    ({"field_sha256": "00"}, r"attack\.field_sha256"),
    ({"target": ""}, r"attack\.target"),
])
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WaNet(**kwargs)
