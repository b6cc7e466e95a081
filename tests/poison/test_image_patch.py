import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.poison import ATTACKS, Poisoner, PoisonManifest, create_manifest
from clipbackdoor.poison.image_patch import ImagePatch, encode_pixels, noise_patch_image
from clipbackdoor.registry import ConfigError


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _patch(side=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, side, side), dtype=torch.uint8, generator=g)


def _png(path, patch):
    Image.fromarray(patch.permute(1, 2, 0).numpy(), mode="RGB").save(path)
    return str(path)


def _inline(patch, **kwargs):
    return ImagePatch(pixels=encode_pixels(patch), side=patch.shape[-1], **kwargs)


def test_only_the_patch_area_changes_and_equals_the_patch():
    patch = _patch(5)
    attack = _inline(patch)
    images = _images()
    before = images.clone()
    triggers = [attack.sample_trigger(np.random.default_rng(i), 32) for i in range(len(images))]
    assert all(set(t) == {"y", "x"} for t in triggers)  # a trigger holds only its placement
    out = attack.apply(images, triggers)
    assert torch.equal(images, before)
    for i, t in enumerate(triggers):
        y, x = t["y"], t["x"]
        assert torch.equal(out[i, :, y : y + 5, x : x + 5], patch)
        mask = torch.ones(32, 32, dtype=torch.bool)
        mask[y : y + 5, x : x + 5] = False
        assert torch.equal(out[i][:, mask], images[i][:, mask])


@pytest.mark.parametrize("location, position, corners", [
    ("four_corners", None, [(0, 0), (0, 11), (11, 0), (11, 11)]),
    ("middle", None, [(5, 5)]),
    ("bottom_left", None, [(11, 0)]),
    ("fixed", [2, 7], [(2, 7)]),
])
def test_fixed_placements_paste_exactly_there(location, position, corners):
    patch = _patch(5)
    attack = _inline(patch, location=location, position=position)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    triggers = [attack.sample_trigger(np.random.default_rng(0), 16) for _ in range(2)]
    assert triggers == [{}, {}]
    out = attack.apply(images, triggers)
    expected = images.clone()
    for y, x in corners:
        expected[:, :, y : y + 5, x : x + 5] = patch
    assert torch.equal(out, expected)


def test_inline_pixels_round_trip_through_params(tmp_path):
    patch = _patch(6)
    attack = ImagePatch(path=_png(tmp_path / "p.png", patch), target="banana", location="random")
    params = json.loads(json.dumps(attack.params()))
    assert params["path"] == str(tmp_path / "p.png") and params["side"] == 6
    (tmp_path / "p.png").unlink()  # the manifest must not need the file
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    assert torch.equal(rebuilt.patch, patch) and rebuilt.params() == params
    images = _images(3)
    triggers = [attack.sample_trigger(np.random.default_rng(i), 32) for i in range(3)]
    assert torch.equal(attack.apply(images, triggers), rebuilt.apply(images, triggers))


def test_file_and_inline_forms_agree(tmp_path):
    patch = _patch(7)
    from_file = ImagePatch(path=_png(tmp_path / "p.png", patch))
    inline = _inline(patch)
    assert torch.equal(from_file.patch, patch) and torch.equal(inline.patch, patch)
    assert from_file.params()["pixels"] == inline.params()["pixels"]


def test_jpeg_and_rgba_files_are_read_as_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 128))
    rgba.save(tmp_path / "p.png")
    assert torch.equal(ImagePatch(path=str(tmp_path / "p.png")).patch, torch.tensor([10, 20, 30]).view(3, 1, 1)
                       .expand(3, 4, 4).to(torch.uint8))
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "p.jpg", quality=95)
    assert ImagePatch(path=str(tmp_path / "p.jpg")).patch.shape == (3, 8, 8)


def test_patch_size_resizes_once_and_deterministically(tmp_path):
    patch = _patch(12)
    path = _png(tmp_path / "p.png", patch)
    a, b = ImagePatch(path=path, patch_size=4), ImagePatch(path=path, patch_size=4)
    assert a.patch.shape == (3, 4, 4) and torch.equal(a.patch, b.patch)
    # The manifest stores the resized pixels, so rebuilding does not resize (or depend on PIL) again.
    params = a.params()
    assert params["side"] == 4 and torch.equal(ATTACKS.build(params).patch, a.patch)
    # A flat image stays flat through the resize.
    Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / "flat.png")
    flat = ImagePatch(path=str(tmp_path / "flat.png"), patch_size=3).patch
    assert torch.equal(flat, torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1).expand(3, 3, 3))


def test_without_an_image_the_patch_is_seeded_noise():
    a = ImagePatch(patch_size=6, noise_seed=3)
    assert torch.equal(a.patch, noise_patch_image(6, 3))
    assert torch.equal(a.patch, ImagePatch(patch_size=6, noise_seed=3).patch)
    assert not torch.equal(a.patch, ImagePatch(patch_size=6, noise_seed=4).patch)
    assert ImagePatch().side == 16
    assert ATTACKS.build(a.params()).params() == a.params()


def test_the_manifest_alone_regenerates_the_poisoned_data(tmp_path):
    pairs = SyntheticPairs(num_samples=100, image_size=32)
    attack = ImagePatch(path=_png(tmp_path / "p.png", _patch(5)), location="four_corners")
    manifest = create_manifest(pairs, attack, 6, seed=2)
    manifest.write(tmp_path / "m.json")
    (tmp_path / "p.png").unlink()
    idx = manifest.indices
    images, _ = pairs.load_images(idx)
    captions = [pairs.caption(i) for i in idx]
    first = Poisoner(manifest, attack)(idx, images, captions)
    again = Poisoner(PoisonManifest.read(tmp_path / "m.json"))(idx, images.clone(), captions)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert create_manifest(pairs, attack, 6, seed=2).to_dict() == manifest.to_dict()


def test_apply_runs_where_the_images_are():
    # The patch follows the images' device (the "meta" device stands in for a GPU here).
    attack = _inline(_patch(4))
    out = attack.apply(_images(2).to("meta"), [{"y": 0, "x": 0}, {"y": 3, "x": 3}])
    assert out.device.type == "meta" and out.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"pixels": "!!notbase64"}, "attack.side"),
    ({"pixels": "!!notbase64", "side": 2}, "attack.pixels: not valid base64"),
    ({"pixels": encode_pixels(torch.zeros(3, 2, 2, dtype=torch.uint8)), "side": 3}, "attack.pixels: holds 12 bytes"),
    ({"path": "/nonexistent/patch.png"}, "attack.path: patch image not found: /nonexistent/patch.png"),
    ({"patch_size": 0}, "attack.patch_size"),
    ({"noise_seed": "x"}, "attack.noise_seed"),
    ({"location": "everywhere"}, "attack.location"),
])
def test_bad_input_names_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ImagePatch(**kwargs)


def test_unreadable_or_non_square_file_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match=r"attack.path: cannot read patch image .*bad.png"):
        ImagePatch(path=str(tmp_path / "bad.png"))
    Image.new("RGB", (6, 4)).save(tmp_path / "wide.png")
    with pytest.raises(ConfigError, match="6x4 px, not square; set patch_size"):
        ImagePatch(path=str(tmp_path / "wide.png"))
    assert ImagePatch(path=str(tmp_path / "wide.png"), patch_size=4).side == 4


def test_a_patch_larger_than_the_image_is_an_error():
    attack = _inline(_patch(8))
    with pytest.raises(ConfigError, match="8 px does not fit a 4 px image"):
        attack.sample_trigger(np.random.default_rng(0), 4)
