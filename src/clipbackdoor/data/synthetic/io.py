"""Export of the synthetic pairs in CleanCLIP's CSV + PNG format."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from clipbackdoor.data.synthetic.captions import CLASSNAMES

if TYPE_CHECKING:  # the package imports this module, so SyntheticData is only needed for annotations
    from clipbackdoor.data.synthetic import SyntheticData


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
