"""Trigger galleries: the grid's geometry, which images it shows, and that triggers change only their pixels."""

import numpy as np
import pytest
from PIL import Image

from clipbackdoor.cli import main
from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.poison import Poisoner, create_manifest
from clipbackdoor.poison.badnet import BadNet
from clipbackdoor.poison.gallery import GALLERY_NAME, grid_layout, write_attack_gallery, write_gallery
from clipbackdoor.reporting.collect import GALLERY_NAME as REPORT_GALLERY_NAME

SCALE = 3  # 32 px images are drawn at 96 px


@pytest.fixture(scope="module")
def pairs():
    return SyntheticPairs(num_samples=64, image_size=32)


def cell(png: np.ndarray, layout, row: int, col: int) -> np.ndarray:
    x0, y0, x1, y1 = layout.box(row, col)
    return png[y0:y1, x0:x1]


def enlarged(image) -> np.ndarray:
    """uint8 (3, S, S) -> (S*SCALE, S*SCALE, 3), nearest neighbour."""
    return image.permute(1, 2, 0).numpy().repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def changed_region(clean: np.ndarray, triggered: np.ndarray, top: int, left: int, size: int) -> tuple[bool, bool]:
    """(any pixel changed inside the square at image pixel (top, left), any pixel changed outside it)."""
    diff = (clean != triggered).any(axis=2)
    inside = np.zeros_like(diff)
    inside[top * SCALE:(top + size) * SCALE, left * SCALE:(left + size) * SCALE] = True
    return bool(diff[inside].any()), bool(diff[~inside].any())


def test_gallery_shows_the_manifests_poisons_then_fills_with_sampled_triggers(pairs, tmp_path):
    attack = BadNet(patch_size=4, location="fixed", position=[4, 8])
    manifest = create_manifest(pairs, attack, 3, seed=0)  # fewer poisons than columns
    path = write_gallery(pairs, Poisoner(manifest, attack), tmp_path / GALLERY_NAME, n=5)
    png = np.asarray(Image.open(path).convert("RGB"))

    layout = grid_layout(["clean", "triggered"], ["", ""], cols=5, image_size=32)
    assert layout.cell == 96 and png.shape[0] == layout.size[1] and png.shape[1] >= layout.size[0]
    # The manifest's three poisoned pairs first, then the first two pairs it left clean.
    poisoned = manifest.indices
    others = [i for i in range(len(pairs)) if i not in poisoned][:2]
    for col, index in enumerate([*poisoned, *others]):
        clean, triggered = cell(png, layout, 0, col), cell(png, layout, 1, col)
        assert np.array_equal(clean, enlarged(pairs.images[index]))
        # The noise patch at [4, 8], 4 px: every changed pixel is in it, and it changed some.
        assert changed_region(clean, triggered, 4, 8, 4) == (True, False)
    # The poisoned columns are exactly what training sees: the manifest's triggers.
    first = Poisoner(manifest, attack)([poisoned[0]], pairs.images[[poisoned[0]]], ["x"])[0][0]
    assert np.array_equal(cell(png, layout, 1, 0), enlarged(first))


def test_attack_gallery_has_a_clean_row_and_one_row_per_attack(pairs, tmp_path):
    attacks = {"badnet": BadNet(patch_size=4, location="fixed", position=[4, 8]),
               "corner": BadNet(patch_size=2, location="bottom_right")}
    path = write_attack_gallery(pairs, attacks, tmp_path / "attacks.png", n=4)
    png = np.asarray(Image.open(path).convert("RGB"))
    layout = grid_layout(["clean", *attacks], ["x"], cols=4, image_size=32)
    assert png.shape[0] == layout.size[1] and png.shape[1] >= layout.size[0]
    for col in range(4):
        clean = cell(png, layout, 0, col)
        assert np.array_equal(clean, enlarged(pairs.images[col]))
        assert changed_region(clean, cell(png, layout, 1, col), 4, 8, 4) == (True, False)
        assert changed_region(clean, cell(png, layout, 2, col), 30, 30, 2) == (True, False)


def test_poison_command_writes_the_gallery_next_to_the_manifest(tmp_path, capsys):
    assert REPORT_GALLERY_NAME == GALLERY_NAME  # the report looks for the file under this name
    assert main(["poison", "--config", "mmcl", "--out", str(tmp_path), "data.train.num_samples=64",
                 "model.name=tiny-clip"]) == 0
    assert f"trigger gallery: {tmp_path / GALLERY_NAME}" in capsys.readouterr().out
    with Image.open(tmp_path / GALLERY_NAME) as image:
        assert image.format == "PNG" and image.height == grid_layout(["clean", "triggered"], ["", ""], 8, 32).size[1]
