"""Trigger galleries: PNG grids of clean images above the same images with a trigger applied.

``write_gallery`` pictures one poisoned dataset: the first pairs its manifest poisons, clean and triggered
exactly as training sees them. ``clipbackdoor poison`` and every training run that poisons its data write it
as ``trigger_gallery.png``, and the report embeds it. ``write_attack_gallery`` puts several attacks on the
same images, one row each (``scripts/make_attack_gallery.py`` writes ``docs/images/attacks.png`` with it).

Images are enlarged by a whole factor with nearest-neighbour sampling, so the pixels of a 2 px patch on a
32 px image show as they are instead of a blur.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from clipbackdoor.io import atomic_write
from clipbackdoor.rundir import GALLERY_NAME  # noqa: F401  (where a run keeps its gallery)
from clipbackdoor.seeding import numpy_rng

log = logging.getLogger(__name__)

CELL = 96  # images are enlarged by the whole factor that brings them closest to this size (never shrunk)
PAD = 4
LINE = 16  # height of a line of text
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class Layout:
    """Where everything goes: a title band, then a label column left of a grid of ``rows`` x ``cols`` cells."""

    rows: int
    cols: int
    cell: int  # side of one enlarged image in pixels
    label_width: int
    title_lines: int
    min_width: int = 0  # wide enough for the title

    @classmethod
    def for_images(cls, rows: int, cols: int, image_size: int, **kwargs: Any) -> Layout:
        return cls(rows, cols, image_size * max(1, round(CELL / image_size)), **kwargs)

    @property
    def top(self) -> int:
        return PAD + self.title_lines * LINE + (PAD if self.title_lines else 0)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the image in ``row``, ``col`` (right and bottom exclusive)."""
        x = self.label_width + PAD + col * (self.cell + PAD)
        y = self.top + row * (self.cell + PAD)
        return x, y, x + self.cell, y + self.cell

    @property
    def size(self) -> tuple[int, int]:
        width = self.label_width + PAD + self.cols * (self.cell + PAD)
        return max(width, self.min_width), self.top + self.rows * (self.cell + PAD)


def grid_layout(labels: Sequence[str], title: Sequence[str], cols: int, image_size: int) -> Layout:
    """The layout ``render_grid`` uses for rows labelled ``labels`` of ``cols`` images of ``image_size`` px."""
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((int(measure.textlength(label, font=font)) for label in labels), default=0) + 2 * PAD
    title_width = max((int(measure.textlength(line, font=font)) for line in title), default=0) + 2 * PAD
    return Layout.for_images(len(labels), cols, image_size, label_width=label_width, title_lines=len(title),
                             min_width=title_width)


def render_grid(rows: Sequence[tuple[str, torch.Tensor]], title: Sequence[str] = ()) -> Image.Image:
    """A labelled grid: row i shows the uint8 images ``rows[i][1]`` (N, 3, S, S), same N and S in every row,
    with the label ``rows[i][0]`` at its left and the ``title`` lines above the grid."""
    font = _font()
    layout = grid_layout([label for label, _ in rows], title, rows[0][1].shape[0], rows[0][1].shape[-1])
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title):
        draw.text((PAD, PAD + i * LINE), line, fill=INK, font=font)
    for r, (label, images) in enumerate(rows):
        _, y0, _, y1 = layout.box(r, 0)
        draw.text((PAD, (y0 + y1) // 2), label, fill=INK, font=font, anchor="lm")
        for c in range(images.shape[0]):
            x0, y0, _, _ = layout.box(r, c)
            image = Image.fromarray(images[c].permute(1, 2, 0).contiguous().cpu().numpy(), mode="RGB")
            canvas.paste(image.resize((layout.cell, layout.cell), Image.Resampling.NEAREST), (x0, y0))
    return canvas


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path


def _readable(pairs, indices: list[int]) -> tuple[list[int], torch.Tensor]:
    """The indices whose images could be read, and those images."""
    images, keep = pairs.load_images(indices)
    rows = keep.nonzero().flatten().tolist()
    return [indices[r] for r in rows], images[rows]


def gallery_samples(pairs, poisoner, n: int) -> list[tuple[int, dict[str, Any], bool]]:
    """(index, trigger, from the manifest) for the gallery: the manifest's first ``n`` poisoned pairs; if it
    has fewer, then the first other pairs of the dataset with triggers drawn from the manifest's seed."""
    chosen = [(s["index"], s["trigger"], True) for s in poisoner.manifest.samples[:n]]
    poisoned = set(poisoner.by_index)
    others = (i for i in range(len(pairs)) if i not in poisoned)
    for index in itertools.islice(others, n - len(chosen)):
        rng = numpy_rng(poisoner.manifest.seed, "gallery", index)
        chosen.append((index, poisoner.attack.sample_trigger(rng, pairs.image_size), False))
    return chosen


def write_gallery(pairs, poisoner, path: str | Path, n: int = 8) -> Path | None:
    """Write a two-row PNG: ``n`` clean images of ``pairs`` above the same images triggered by ``poisoner``.

    Args:
        pairs: the poisoned dataset (a ``PairDataset``).
        poisoner: a ``Poisoner`` (its manifest and attack).
        path: where the PNG goes (written atomically).
        n: images per row.

    Returns:
        ``path``, or None when no image of the dataset could be read.
    """
    samples = gallery_samples(pairs, poisoner, n)
    indices, images = _readable(pairs, [i for i, _, _ in samples])
    if not indices:
        log.warning("no readable image for the trigger gallery; %s not written", path)
        return None
    by_index = {i: (trigger, real) for i, trigger, real in samples}
    triggered = poisoner.attack.apply(images, [by_index[i][0] for i in indices])
    manifest, attack = poisoner.manifest, poisoner.attack
    shown = sum(by_index[i][1] for i in indices)
    example = next((s["caption"] for s in manifest.samples), None)
    title = [f"{attack.name} -> {attack.target!r}" + (f', caption e.g. "{example}"' if example else ""),
             f"{len(manifest.samples)} of {manifest.num_samples} pairs poisoned; {shown} of them shown"
             + (", then other pairs with sampled triggers" if shown < len(indices) else "")]
    return _save(render_grid([("clean", images), ("triggered", triggered)], title), path)


def write_attack_gallery(dataset, attacks: Mapping[str, Any], path: str | Path, n: int = 6,
                         seed: int = 0) -> Path:
    """Write a PNG with ``n`` clean images of ``dataset`` on top and one row per attack below, each the same
    images with that attack's triggers (drawn from ``seed``, the attack's name and the image's index).

    Args:
        dataset: a ``PairDataset``; its first ``n`` readable images are shown.
        attacks: row label -> attack.
        path: where the PNG goes (written atomically).
        n: images per row.
        seed: seed of the trigger instances.
    """
    indices, images = _readable(dataset, list(range(min(n, len(dataset)))))
    if not indices:
        raise ValueError(f"no readable image among the first {n} of the dataset")
    rows = [("clean", images)]
    for name, attack in attacks.items():
        triggers = [attack.sample_trigger(numpy_rng(seed, "gallery", name, i), dataset.image_size) for i in indices]
        rows.append((name, attack.apply(images, triggers)))
    title = ["top row: clean images; below: the same images with each attack's trigger"]
    return _save(render_grid(rows, title), path)
