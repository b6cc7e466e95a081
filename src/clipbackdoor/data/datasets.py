"""Image-caption pair datasets behind one interface (``PairDataset``).

A dataset hands out uint8 images at the model's resolution and raw caption strings, by index and in
batches; poisoning, tokenization and augmentation happen later in ``data.pipeline``. ``csv`` opens images
lazily from a CleanCLIP-format CSV; ``synthetic`` holds generated pairs in memory and gathers whole
batches with one tensor index, which is what makes CPU pre-training fast.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image, UnidentifiedImageError

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import DATASETS
from clipbackdoor.data.transforms import resize_center_crop
from clipbackdoor.registry import ConfigError
from clipbackdoor.seeding import derive_seed

log = logging.getLogger(__name__)
_LETTER = re.compile(r"[A-Za-z]")


class PairDataset(Protocol):
    image_size: int

    def __len__(self) -> int: ...

    def caption(self, index: int) -> str: ...

    def sample_id(self, index: int) -> str:
        """A stable identifier for the poison manifest (image path, or ``synthetic:<split>:<i>``)."""

    def load_images(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, S, S) and a bool mask (B,) of the ones that could be read."""

    def describe(self) -> dict[str, Any]: ...


def load_image_file(path: Path, size: int, where: str) -> torch.Tensor:
    """Open ``path`` and preprocess it; a missing or corrupt file raises DataError naming it."""
    try:
        with Image.open(path) as image:
            return resize_center_crop(image, size)
    except FileNotFoundError:
        raise DataError(f"{where}: image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{where}: cannot read image {path}: {err}") from None


def check_on_error(value: str, where: str) -> str:
    if value not in ("raise", "skip"):
        raise ConfigError(f"{where}.on_error: must be 'raise' or 'skip', got {value!r}")
    return value


def generate_split(num_samples: int, *, split: str, seed: int, where: str, **kwargs: Any):
    """One split of the synthetic data. Each (seed, split) pair gets its own generator seed, so the
    ``train``, ``clean`` and ``test`` splits never share an image; every caller goes through here."""
    from clipbackdoor.data import synthetic

    try:
        return synthetic.generate(num_samples, seed=derive_seed("synthetic", seed, split), **kwargs)
    except ValueError as err:
        raise ConfigError(f"{where} (synthetic): {err}") from None


@DATASETS.register("synthetic")
class SyntheticPairs:
    """Generated shape-and-caption pairs (see ``data.synthetic``), held in memory.

    Args:
        num_samples: number of pairs.
        split: name of an independent draw (``train``, ``clean``, ``test``...); different splits never
            share images.
        seed: data seed; None uses the experiment seed.
        difficulty: clutter and noise in [0, 1].
        caption_noise: fraction of captions that never mention the object.
    """

    def __init__(
        self,
        num_samples: int = 20000,
        split: str = "train",
        seed: int | None = None,
        difficulty: float = 0.5,
        caption_noise: float = 0.1,
        image_size: int = 32,
        experiment_seed: int = 0,
    ) -> None:
        self.seed = experiment_seed if seed is None else seed
        self.split = split
        self.image_size = image_size
        self._params = dict(num_samples=num_samples, split=split, seed=self.seed, difficulty=difficulty,
                            caption_noise=caption_noise, image_size=image_size)
        data = generate_split(num_samples, split=split, seed=self.seed, where="data.train", image_size=image_size,
                              difficulty=difficulty, caption_noise=caption_noise)
        self.images, self.labels, self.captions = data.images, data.labels, data.captions
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.captions)

    def caption(self, index: int) -> str:
        return self.captions[index]

    def sample_id(self, index: int) -> str:
        return f"synthetic:{self.split}:{index}"

    def load_images(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], torch.ones(len(idx), dtype=torch.bool)

    def describe(self) -> dict[str, Any]:
        return {"name": "synthetic", **self._params}


@DATASETS.register("csv")
class CsvPairs:
    """A CleanCLIP-format CSV: an image path relative to the CSV's folder and a caption per row.

    A leading unnamed index column (written by pandas) and extra columns such as ``is_backdoor`` are
    ignored. Rows with an empty or letter-free caption, or whose image file is missing, raise a DataError
    naming the line, or with ``on_error: skip`` are dropped and counted. A corrupt image found while
    training is dropped from its batch in skip mode.

    Args:
        path: the CSV file.
        image_key, caption_key: column names.
        delimiter: field separator.
        on_error: ``raise`` or ``skip``.
        check_files: stat every image file up front, so a missing file fails before training starts.
    """

    def __init__(
        self,
        path: str,
        image_key: str = "image",
        caption_key: str = "caption",
        delimiter: str = ",",
        on_error: str = "raise",
        check_files: bool = True,
        image_size: int = 224,
    ) -> None:
        self.path = Path(path)
        self.root = self.path.parent
        self.image_size = image_size
        self.on_error = check_on_error(on_error, "data.train")
        self._params = dict(path=str(path), image_key=image_key, caption_key=caption_key, delimiter=delimiter)
        self.skipped: Counter[str] = Counter()
        self.files: list[str] = []
        self.captions: list[str] = []
        self.lines: list[int] = []
        for line, row in read_csv_rows(self.path, (image_key, caption_key), delimiter):
            file, caption = row[image_key].strip(), row[caption_key].strip()
            problem = None
            if not file:
                problem = "empty image path"
            elif not _LETTER.search(caption):
                problem = "empty caption" if not caption else f"caption without letters {caption!r}"
            elif check_files and not (self.root / file).is_file():
                problem = f"image file not found: {self.root / file}"
            if problem:
                if self.on_error == "raise":
                    raise DataError(f"{self.path}: line {line}: {problem}")
                self.skipped[problem.split(":")[0]] += 1
                continue
            self.files.append(file)
            self.captions.append(caption)
            self.lines.append(line)
        if self.skipped:
            log.warning("%s: skipped %d rows (%s)", self.path, sum(self.skipped.values()), dict(self.skipped))
        if not self.files:
            raise DataError(f"{self.path}: no usable rows")

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, index: int) -> str:
        return self.captions[index]

    def sample_id(self, index: int) -> str:
        return self.files[index]

    def image_path(self, index: int) -> Path:
        return self.root / self.files[index]

    def load_images(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.image_size
        images = torch.zeros(len(indices), 3, s, s, dtype=torch.uint8)
        keep = torch.ones(len(indices), dtype=torch.bool)
        for row, i in enumerate(indices):
            where = f"{self.path}: line {self.lines[i]}"
            try:
                images[row] = load_image_file(self.image_path(i), s, where)
            except DataError as err:
                if self.on_error == "raise":
                    raise
                log.warning("skipping: %s", err)
                self.skipped["unreadable image"] += 1
                keep[row] = False
        return images, keep

    def describe(self) -> dict[str, Any]:
        return {"name": "csv", **self._params, "rows": len(self), "skipped": dict(self.skipped)}


def read_csv_rows(path: Path, required: Sequence[str], delimiter: str):
    """Yield (line number, row dict) of a CSV, checking that the required columns exist."""
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))}; the header has "
                f"{', '.join(map(repr, header)) or 'no columns'} (set image_key/caption_key/delimiter)"
            )
        try:
            for row in reader:
                if None in row or any(row.get(c) is None for c in required):
                    raise DataError(
                        f"{path}: line {reader.line_num}: expected {len(header)} fields, got a different count"
                    )
                yield reader.line_num, row
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV: {err}") from None
