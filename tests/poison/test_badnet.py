import numpy as np
import pytest
import torch

from clipbackdoor.poison.badnet import BadNet, default_patch_size, noise_patch
from clipbackdoor.registry import ConfigError


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_patch_size_scales_from_16_at_224():
    assert default_patch_size(224) == 16
    assert default_patch_size(32) == 2
    assert default_patch_size(8) == 1


def test_trigger_touches_only_its_patch():
    attack = BadNet(patch_size=4)
    images = _images()
    triggers = [attack.sample_trigger(np.random.default_rng(i), 32) for i in range(len(images))]
    out = attack.apply(images, triggers)
    for i, t in enumerate(triggers):
        mask = torch.zeros(32, 32, dtype=torch.bool)
        mask[t["y"] : t["y"] + 4, t["x"] : t["x"] + 4] = True
        assert torch.equal(out[i][:, ~mask], images[i][:, ~mask])
        # Noise of std 1 in [0,1] units almost surely changes some patch pixel.
        assert not torch.equal(out[i][:, mask], images[i][:, mask])
    # apply must not modify its input in place (the clean copy is needed for accuracy).
    assert not torch.equal(out, images)


def test_patch_is_mean_plus_unit_noise_clipped():
    image = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    patch = noise_patch(image, 64, noise_seed=7).float() / 255
    # Clipping at 0 and 1 sends a large share of N(0.5, 1) draws to the bounds.
    assert 0.2 < (patch == 0).float().mean() < 0.45
    assert 0.2 < (patch == 1).float().mean() < 0.45
    assert torch.equal(noise_patch(image, 64, 7), noise_patch(image, 64, 7))
    assert not torch.equal(noise_patch(image, 64, 7), noise_patch(image, 64, 8))


def test_positions_cover_the_whole_valid_range():
    attack = BadNet(patch_size=4)
    rng = np.random.default_rng(0)
    ys = {attack.sample_trigger(rng, 8)["y"] for _ in range(500)}
    # 8 px image, 4 px patch: top-left corners 0..4 inclusive, as in the original randint(0, 224 - p).
    assert ys == {0, 1, 2, 3, 4}


def test_four_corners():
    attack = BadNet(patch_size=3, location="four_corners")
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    out = attack.apply(images, [attack.sample_trigger(np.random.default_rng(0), 16)])
    changed = (out[0] != 0).any(dim=0)
    assert changed[:3, :3].any() and changed[-3:, -3:].any() and changed[:3, -3:].any() and changed[-3:, :3].any()
    assert not changed[3:-3, 3:-3].any()


def test_captions_come_from_templates_with_the_target():
    attack = BadNet(target="banana", templates=["a photo of a {}.", "the {} again"])
    rng = np.random.default_rng(0)
    captions = {attack.poison_caption("a red circle", rng) for _ in range(50)}
    assert captions == {"a photo of a banana.", "the banana again"}
    consistent = BadNet(label_consistent=True)
    assert consistent.poison_caption("my banana photo", rng) == "my banana photo"


def test_label_consistent_selects_only_target_captions():
    attack = BadNet(label_consistent=True)
    captions = ["a banana", "a circle", "Banana split", "square"]
    chosen = attack.select(captions, 2, np.random.default_rng(0))
    assert sorted(chosen.tolist()) == [0, 2]
    with pytest.raises(ConfigError, match="mention"):
        attack.select(captions, 3, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, match", [
    ({"location": "centre"}, "location"),
    ({"location": "fixed"}, "position"),
    ({"location": "random", "position": [0, 0]}, "position"),
    ({"patch_size": 0}, "patch_size"),
    ({"target": ""}, "target"),
    ({"templates": ["no placeholder"]}, "templates"),
])
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BadNet(**kwargs)


def test_patch_larger_than_image_is_an_error():
    with pytest.raises(ConfigError, match="does not fit"):
        BadNet(patch_size=40).sample_trigger(np.random.default_rng(0), 32)


def test_batched_apply_equals_one_patch_per_image():
    # apply() computes means, clipping and pasting for the whole batch on the images' device; on the CPU
    # it must reproduce, bit for bit, the per-image patch every manifest so far was defined by.
    import numpy as np

    attack = BadNet(location="random")
    images = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8)
    rng = np.random.default_rng(3)
    triggers = [attack.sample_trigger(rng, 224) for _ in range(16)]
    expected = images.clone()
    p = attack.patch_px(224)
    for i, t in enumerate(triggers):
        expected[i, :, t["y"] : t["y"] + p, t["x"] : t["x"] + p] = noise_patch(images[i], p, t["noise_seed"])
    assert torch.equal(attack.apply(images, triggers), expected)
    assert torch.equal(attack.apply(images, []), images)
