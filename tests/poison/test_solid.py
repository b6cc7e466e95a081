import json

import numpy as np
import pytest
import torch

from clipbackdoor.poison import ATTACKS
from clipbackdoor.poison.solid import SolidPatch, parse_colour
from clipbackdoor.registry import ConfigError

YELLOW = torch.tensor([255, 255, 0], dtype=torch.uint8).view(3, 1, 1)


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _triggers(attack, n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [attack.sample_trigger(rng, size) for _ in range(n)]


def _expected(images, corners, p, colour=YELLOW):
    out = images.clone()
    for i, cs in enumerate(corners):
        for y, x in cs:
            out[i, :, y : y + p, x : x + p] = colour
    return out


def test_default_is_a_yellow_patch_scaled_from_16_at_224():
    attack = SolidPatch()
    assert attack.colour == (255, 255, 0) and attack.patch_px(224) == 16 and attack.patch_px(32) == 2


def test_only_the_patch_changes_and_it_is_exactly_the_colour():
    attack = SolidPatch(patch_size=5)
    images = _images()
    before = images.clone()
    triggers = _triggers(attack, 4)
    # A random placement's trigger is its corner and nothing else.
    assert all(set(t) == {"y", "x"} for t in triggers)
    out = attack.apply(images, triggers)
    assert torch.equal(images, before), "apply must not modify its input"
    assert torch.equal(out, _expected(images, [[(t["y"], t["x"])] for t in triggers], 5))


@pytest.mark.parametrize("colour, rgb", [
    ("yellow", (255, 255, 0)), ("red", (255, 0, 0)), ("green", (0, 255, 0)), ("blue", (0, 0, 255)),
    ("white", (255, 255, 255)), ("Black", (0, 0, 0)), ("#1a2B3c", (26, 43, 60)), ([1, 2, 3], (1, 2, 3)),
])
def test_colour_names_hex_and_triples(colour, rgb):
    assert parse_colour(colour) == rgb
    attack = SolidPatch(patch_size=2, colour=colour, location="top_left")
    out = attack.apply(_images(1), _triggers(attack, 1))
    assert out[0, :, :2, :2].tolist() == [[[v] * 2] * 2 for v in rgb]


@pytest.mark.parametrize("location, corners", [
    ("four_corners", [(0, 0), (0, 28), (28, 0), (28, 28)]),
    ("middle", [(14, 14)]),
    ("top_left", [(0, 0)]),
    ("top_right", [(0, 28)]),
    ("bottom_left", [(28, 0)]),
    ("bottom_right", [(28, 28)]),
])
def test_fixed_placements_are_exact(location, corners):
    attack = SolidPatch(patch_size=4, location=location)
    images = _images(2)
    triggers = _triggers(attack, 2)
    assert triggers == [{}, {}]
    assert torch.equal(attack.apply(images, triggers), _expected(images, [corners] * 2, 4))


def test_fixed_position():
    attack = SolidPatch(patch_size=3, location="fixed", position=[5, 20], colour="blue")
    images = _images(2)
    blue = torch.tensor([0, 0, 255], dtype=torch.uint8).view(3, 1, 1)
    out = attack.apply(images, _triggers(attack, 2))
    assert torch.equal(out, _expected(images, [[(5, 20)]] * 2, 3, blue))
    with pytest.raises(ConfigError, match="position"):
        SolidPatch(patch_size=3, location="fixed", position=[30, 0]).sample_trigger(np.random.default_rng(0), 32)


def test_same_seed_same_triggers_same_images():
    attack = SolidPatch(patch_size=4)
    images = _images(8)
    a, b = _triggers(attack, 8, seed=5), _triggers(attack, 8, seed=5)
    assert a == b and a != _triggers(attack, 8, seed=6)
    assert torch.equal(attack.apply(images, a), attack.apply(images, b))


def test_batched_apply_equals_one_by_one():
    attack = SolidPatch()
    images = _images(6, size=64)
    triggers = _triggers(attack, 6, size=64)
    one_by_one = torch.cat([attack.apply(images[i : i + 1], triggers[i : i + 1]) for i in range(6)])
    assert torch.equal(attack.apply(images, triggers), one_by_one)
    assert torch.equal(attack.apply(images, []), images)


def test_params_rebuild_an_identical_attack():
    attack = SolidPatch(target="beaver", patch_size=3, colour="#ff8000", location="fixed", position=[1, 2],
                        templates=["{} here"])
    params = json.loads(json.dumps(attack.params()))
    assert params["colour"] == [255, 128, 0] and params["name"] == "solid"
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    assert rebuilt.params() == params
    images, triggers = _images(3), _triggers(attack, 3)
    assert torch.equal(attack.apply(images, triggers), rebuilt.apply(images, triggers))



@pytest.mark.parametrize("kwargs, match", [
    ({"colour": "purple"}, "colour"),
    ({"colour": "#12345"}, "colour"),
    ({"colour": [255, 0]}, "colour"),
    ({"colour": [256, 0, 0]}, "colour"),
    ({"colour": [1.5, 0, 0]}, "colour"),
    ({"patch_size": 0}, "patch_size"),
    ({"patch_size": 2.5}, "patch_size"),
    ({"location": "centre"}, "location"),
    ({"location": "fixed"}, "position"),
    ({"target": ""}, "target"),
    ({"label_consistent": "yes"}, "label_consistent"),
])
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SolidPatch(**kwargs)
