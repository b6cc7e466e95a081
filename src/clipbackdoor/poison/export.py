"""Write a poisoned dataset to disk in CleanCLIP's format, for tools that read CSV + images.

Poisoned images go to ``backdoor_images/`` (the original code marks backdoors by that substring of the path)
and the CSV carries an explicit ``is_backdoor`` column as well. Clean rows of a CSV source point back at the
original files; in-memory (synthetic) images are written out.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from clipbackdoor.data.transforms import to_pil
from clipbackdoor.io import atomic_write


def export_poisoned(pairs, poisoner, out_dir: str | Path, batch_size: int = 256) -> Path:
    """Write ``out_dir/poisoned.csv`` (image, caption, is_backdoor) and the images; returns the CSV path."""
    out = Path(out_dir)
    (out / "backdoor_images").mkdir(parents=True, exist_ok=True)
    on_disk = hasattr(pairs, "image_path")
    if not on_disk:
        (out / "images").mkdir(exist_ok=True)
    rows = []
    for start in range(0, len(pairs), batch_size):
        indices = list(range(start, min(start + batch_size, len(pairs))))
        images, keep = pairs.load_images(indices)
        captions = [pairs.caption(i) for i in indices]
        images, captions, poisoned = poisoner(indices, images, captions)
        for row, i in enumerate(indices):
            if not keep[row]:
                continue
            if poisoned[row]:
                rel = f"backdoor_images/{i:07d}.png"
            elif on_disk:
                rel = os.path.relpath(pairs.image_path(i), out)
            else:
                rel = f"images/{i:07d}.png"
            if poisoned[row] or not on_disk:
                to_pil(images[row]).save(out / rel)
            rows.append((rel, captions[row], int(poisoned[row])))

    path = out / "poisoned.csv"
    atomic_write(path, lambda f: f.write(_csv_text(rows).encode()))
    return path


def _csv_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "caption", "is_backdoor"])
    w.writerows(rows)
    return buf.getvalue()
