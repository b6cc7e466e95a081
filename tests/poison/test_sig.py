import json
import math

import numpy as np
import pytest
import torch

from clipbackdoor.poison import ATTACKS
from clipbackdoor.poison.sig import Sig
from clipbackdoor.registry import ConfigError


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _reference(images, amplitude=60.0, periods=6.0, alpha=None):
    """x[c, i, j] + A sin(2 pi j f / W) (or the alpha mix), clipped and rounded, in float64 pixel levels."""
    w = images.shape[-1]
    s = torch.tensor([amplitude * math.sin(2 * math.pi * j * periods / w) for j in range(w)], dtype=torch.float64)
    x = images.double()
    y = x + s if alpha is None else (1 - alpha) * x + alpha * s
    return y.clamp(0, 255).round()


def _assert_matches(out, ref):
    # float32 and float64 can disagree only for values within ~1e-5 of a half level.
    diff = (out.double() - ref).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.999


def test_the_originals_signal():
    attack = Sig()
    assert (attack.amplitude, attack.periods, attack.direction, attack.alpha) == (60.0, 6.0, "horizontal", None)
    images = _images(size=224)
    _assert_matches(attack.apply(images, [{}] * 4), _reference(images))


def test_exact_formula_with_other_parameters():
    images = _images(size=48)
    _assert_matches(Sig(amplitude=20, periods=2.5).apply(images, [{}] * 4), _reference(images, 20, 2.5))
    # The CleanCLIP code's only runnable SIG: 0.8 x + 0.2 s.
    _assert_matches(Sig(alpha=0.2).apply(images, [{}] * 4), _reference(images, alpha=0.2))


def test_columns_where_the_sine_is_zero_are_unchanged_and_rows_are_identical():
    # 24 px, 6 periods: sin(pi j / 2) = 0 at every even column.
    images = _images(size=24)
    out = Sig().apply(images, [{}] * 4)
    assert torch.equal(out[..., ::2], images[..., ::2])
    assert not torch.equal(out[..., 1::2], images[..., 1::2])
    # Before clipping every row gets the same offset: on mid-grey nothing clips, so all rows are equal.
    grey = torch.full((1, 3, 24, 24), 128, dtype=torch.uint8)
    g = Sig().apply(grey, [{}])[0]
    assert torch.equal(g, g[:, :1, :].expand(3, 24, 24)) and torch.equal(g[0], g[2])
    assert g[0, 0, :7].tolist() == [128, 188, 128, 68, 128, 188, 128]  # 128 + 60 sin(pi j / 2)
    # On any image, every pixel that does not clip moves by its column's offset, whatever its row.
    offset = (out.int() - images.int())
    column_offset = torch.tensor([0, 60, 0, -60] * 6, dtype=torch.int32).expand_as(offset)
    unclipped = (images.int() >= 60) & (images.int() <= 195)
    assert torch.equal(offset[unclipped], column_offset[unclipped])


def test_vertical_is_the_transpose():
    images = _images(size=32)
    horizontal = Sig().apply(images.transpose(-1, -2), [{}] * 4)
    assert torch.equal(Sig(direction="vertical").apply(images, [{}] * 4), horizontal.transpose(-1, -2))


def test_no_per_trigger_randomness():
    attack = Sig()
    rng = np.random.default_rng(0)
    assert [attack.sample_trigger(rng, 32) for _ in range(3)] == [{}, {}, {}]
    images = _images(1).expand(3, -1, -1, -1)
    out = attack.apply(images, [{}] * 3)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_batched_apply_equals_one_by_one_and_leaves_the_input():
    attack = Sig()
    images = _images(5)
    before = images.clone()
    out = attack.apply(images, [{}] * 5)
    assert torch.equal(images, before), "apply must not modify its input"
    assert torch.equal(out, torch.cat([attack.apply(images[i : i + 1], [{}]) for i in range(5)]))
    assert torch.equal(attack.apply(images, []), images)


@pytest.mark.parametrize("kwargs", [{}, {"amplitude": 25, "periods": 3, "direction": "vertical", "alpha": 0.2,
                                         "target": "beaver", "templates": ["{}!"]}])
def test_params_rebuild_an_identical_attack(kwargs):
    attack = Sig(**kwargs)
    params = json.loads(json.dumps(attack.params()))
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    assert rebuilt.params() == params
    images = _images(3)
    assert torch.equal(attack.apply(images, [{}] * 3), rebuilt.apply(images, [{}] * 3))



@pytest.mark.parametrize("kwargs, match", [
    ({"amplitude": 0}, "amplitude"),
    ({"amplitude": 300}, "amplitude"),
    ({"amplitude": "60"}, "amplitude"),
    ({"periods": 0}, "periods"),
    ({"periods": float("nan")}, "periods"),
    ({"direction": "diagonal"}, "direction"),
    ({"alpha": 0}, "alpha"),
    ({"alpha": 2}, "alpha"),
    ({"target": ""}, "target"),
])
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Sig(**kwargs)
