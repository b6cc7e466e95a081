import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipbackdoor.data.transforms import resize_center_crop
from clipbackdoor.poison import ATTACKS
from clipbackdoor.poison.blended import Blended
from clipbackdoor.registry import ConfigError


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _triggers(attack, n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [attack.sample_trigger(rng, size) for _ in range(n)]


def _reference(images, patterns, alpha):
    """round(clip((1 - a) x + a p)) in float64 and pixel levels, independently of the attack's float32 path."""
    x = images.double() / 255
    return ((1 - alpha) * x + alpha * patterns.double()).clamp(0, 1).mul(255).round()


def _assert_close_to(out, ref):
    diff = (out.double() - ref).abs()
    assert diff.max() <= 1  # float32 vs float64 can only disagree where the value is within ~1e-5 of .5
    assert (diff == 0).float().mean() > 0.999


@pytest.fixture
def kitty(tmp_path):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (40, 56, 3), dtype=torch.uint8, generator=g).numpy()
    path = tmp_path / "kitty.png"
    Image.fromarray(pixels, mode="RGB").save(path)
    return path


def test_noise_is_fresh_per_image_and_reproducible_from_the_trigger():
    attack = Blended(alpha=0.3)
    images = _images()
    triggers = _triggers(attack, 4)
    assert all(set(t) == {"noise_seed"} for t in triggers) and len({t["noise_seed"] for t in triggers}) == 4
    # The pattern of each image is U(0, 1) noise of the image's size from the trigger's seed.
    patterns = torch.stack([torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(t["noise_seed"]))
                            for t in triggers])
    _assert_close_to(attack.apply(images, triggers), _reference(images, patterns, 0.3))
    # alpha = 1 gives the pattern itself, and it differs between images.
    full = Blended(alpha=1.0).apply(images, triggers)
    assert torch.equal(full, (patterns * 255).round().to(torch.uint8))
    assert not torch.equal(full[0], full[1])


def test_fixed_noise_is_one_pattern_for_every_image():
    attack = Blended(alpha=1.0, pattern="fixed_noise")
    triggers = _triggers(attack, 4)
    assert triggers == [{}] * 4
    out = attack.apply(_images(), triggers)
    assert all(torch.equal(out[0], out[i]) for i in range(1, 4))
    # At 224 px it is the seed's U(0, 1) draw; other resolutions take nearest-neighbour samples of it.
    at224 = Blended(alpha=1.0, pattern="fixed_noise").apply(_images(1, 224), [{}])[0]
    expected = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert torch.equal(at224, (expected * 255).round().to(torch.uint8))
    assert set(out[0].flatten().tolist()) <= set(at224.flatten().tolist())
    other_seed = Blended(alpha=1.0, pattern="fixed_noise", pattern_seed=1).apply(_images(1), [{}])[0]
    assert not torch.equal(out[0], other_seed)


def test_fixed_noise_blend_formula():
    attack = Blended(alpha=0.2, pattern="fixed_noise", pattern_seed=3)
    images = _images()
    pattern = Blended(alpha=1.0, pattern="fixed_noise", pattern_seed=3).fixed_pattern(32)
    _assert_close_to(attack.apply(images, _triggers(attack, 4)), _reference(images, pattern[None], 0.2))


def test_image_file_pattern_is_resized_and_centre_cropped_like_the_data(kitty):
    # alpha = 0.2 mixes two uint8 images into multiples of 1/5 of a level: never a rounding tie (0.5 or 0.3
    # would put many pixels exactly on one, where float32 and float64 may round differently).
    attack = Blended(alpha=0.2, pattern=str(kitty))
    images = _images()
    pattern = resize_center_crop(Image.open(kitty), 32).double() / 255
    _assert_close_to(attack.apply(images, _triggers(attack, 4)), _reference(images, pattern[None], 0.2))
    full = Blended(alpha=1.0, pattern=str(kitty)).apply(images, [{}] * 4)
    assert torch.equal(full, resize_center_crop(Image.open(kitty), 32)[None].expand(4, -1, -1, -1))


def test_image_file_hash_is_recorded_and_a_changed_file_refused(kitty):
    params = json.loads(json.dumps(Blended(pattern=str(kitty)).params()))
    assert params["pattern"] == str(kitty.resolve()) and len(params["pattern_sha256"]) == 64
    ATTACKS.build(params, "poison manifest attack")  # unchanged: fine
    Image.new("RGB", (40, 56), (1, 2, 3)).save(kitty)
    with pytest.raises(ConfigError, match="pattern_sha256.*changed"):
        ATTACKS.build(params, "poison manifest attack")
    kitty.unlink()
    with pytest.raises(ConfigError, match="attack.pattern"):
        ATTACKS.build(params, "poison manifest attack")


def test_same_seed_same_triggers_same_images():
    attack = Blended()
    images = _images(6)
    a, b = _triggers(attack, 6, seed=4), _triggers(attack, 6, seed=4)
    assert a == b and a != _triggers(attack, 6, seed=5)
    assert torch.equal(attack.apply(images, a), attack.apply(images, b))


@pytest.mark.parametrize("pattern", ["noise", "fixed_noise", "kitty"])
def test_batched_apply_equals_one_by_one_and_leaves_the_input(pattern, kitty):
    attack = Blended(pattern=str(kitty) if pattern == "kitty" else pattern)
    images = _images(5)
    before = images.clone()
    triggers = _triggers(attack, 5)
    out = attack.apply(images, triggers)
    assert torch.equal(images, before), "apply must not modify its input"
    one_by_one = torch.cat([attack.apply(images[i : i + 1], triggers[i : i + 1]) for i in range(5)])
    assert torch.equal(out, one_by_one)
    assert torch.equal(attack.apply(images, []), images)


@pytest.mark.parametrize("kwargs", [
    {"alpha": 0.35},
    {"alpha": 0.1, "pattern": "fixed_noise", "pattern_seed": 7},
    {"pattern": "fixed_noise"},
    {"pattern": "kitty", "target": "beaver", "templates": ["{}!"]},
])
def test_params_rebuild_an_identical_attack(kwargs, kitty):
    if kwargs.get("pattern") == "kitty":
        kwargs = {**kwargs, "pattern": str(kitty)}
    attack = Blended(**kwargs)
    params = json.loads(json.dumps(attack.params()))
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    assert rebuilt.params() == params
    images, triggers = _images(3), _triggers(attack, 3)
    assert torch.equal(attack.apply(images, triggers), rebuilt.apply(images, triggers))



@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 0}, "alpha"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": True}, "alpha"),
    ({"alpha": "0.2"}, "alpha"),
    ({"pattern": "no/such/file.png"}, "pattern"),
    ({"pattern": ""}, "pattern"),
    ({"pattern": "noise", "pattern_seed": 1}, "pattern_seed"),
    ({"pattern": "fixed_noise", "pattern_seed": -1}, "pattern_seed"),
    ({"pattern": "noise", "pattern_sha256": "ab"}, "pattern_sha256"),
    ({"target": ""}, "target"),
])
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Blended(**kwargs)


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(ConfigError, match="attack.pattern: cannot read"):
        Blended(pattern=str(path))
