"""Labelled image datasets for zero-shot accuracy and ASR (``ClassificationDataset``).

Each carries its class names and prompt templates, so the target class of an attack is looked up by name
per dataset instead of the original code's hard-coded ImageNet index 954.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from clipbackdoor.data.datasets import generate_split, load_image_file, read_csv_rows
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import EVAL_DATASETS
from clipbackdoor.registry import ConfigError


class ClassificationDataset(Protocol):
    image_size: int
    labels: torch.Tensor  # int64 (N,)
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __len__(self) -> int: ...

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 images (B, 3, S, S)."""

    def describe(self) -> dict[str, Any]: ...


@EVAL_DATASETS.register("synthetic")
class SyntheticClassification:
    """A held-out draw of the synthetic generator, labelled with its class names and prompt templates."""

    def __init__(
        self,
        num_samples: int = 2000,
        split: str = "test",
        seed: int | None = None,
        difficulty: float = 0.5,
        image_size: int = 32,
        experiment_seed: int = 0,
    ) -> None:
        from clipbackdoor.data import synthetic

        seed = experiment_seed if seed is None else seed
        self.image_size = image_size
        data = generate_split(num_samples, split=split, seed=seed, where="data.eval", image_size=image_size,
                              difficulty=difficulty)
        self.images, self.labels = data.images, data.labels
        self.classnames = tuple(synthetic.CLASSNAMES)
        self.templates = tuple(synthetic.TEMPLATES)
        self._params = dict(num_samples=num_samples, split=split, seed=seed, difficulty=difficulty)

    def __len__(self) -> int:
        return len(self.labels)

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    def describe(self) -> dict[str, Any]:
        return {"name": "synthetic", **self._params}


def _read_lines(path: Path, what: str) -> tuple[str, ...]:
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    lines = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not lines:
        raise ConfigError(f"{what}: {path} is empty")
    return lines


def resolve_classnames(spec: str | list[str]) -> tuple[str, ...]:
    """``imagenet`` (open_clip's 1,000 names), a list, or a text file with one name per line."""
    if isinstance(spec, list):
        return tuple(spec)
    if spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return tuple(IMAGENET_CLASSNAMES)
    return _read_lines(Path(spec), "data.eval.classnames")


def resolve_templates(spec: str | list[str]) -> tuple[str, ...]:
    """``openai_imagenet`` (CLIP's 80), ``simple_imagenet``, a list, or a file of ``{}`` templates."""
    if isinstance(spec, list):
        templates = tuple(spec)
    elif spec in ("openai_imagenet", "simple_imagenet"):
        from open_clip import zero_shot_metadata as meta

        raw = meta.OPENAI_IMAGENET_TEMPLATES if spec == "openai_imagenet" else meta.SIMPLE_IMAGENET_TEMPLATES
        # open_clip stores them as lambdas; a "{}" string is what configs and manifests can carry.
        templates = tuple(t("{}") for t in raw)
    else:
        templates = _read_lines(Path(spec), "data.eval.templates")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ConfigError(f"data.eval.templates: template(s) without a '{{}}' placeholder: {bad[:3]}")
    return templates


@EVAL_DATASETS.register("labels_csv")
class LabelsCsvClassification:
    """CleanCLIP's ImageNet layout: a ``labels.csv`` with ``image,label`` (0-based class index).

    Args:
        path: the labels CSV, or the folder that holds ``labels.csv``.
        classnames: ``imagenet``, a list, or a file with one name per line.
        templates: ``openai_imagenet``, ``simple_imagenet``, a list, or a file.
    """

    def __init__(
        self,
        path: str,
        classnames: str | list[str] = "imagenet",
        templates: str | list[str] = "openai_imagenet",
        image_key: str = "image",
        label_key: str = "label",
        delimiter: str = ",",
        image_size: int = 224,
    ) -> None:
        p = Path(path)
        self.path = p / "labels.csv" if p.is_dir() else p
        self.root = self.path.parent
        self.image_size = image_size
        self.classnames = resolve_classnames(classnames)
        self.templates = resolve_templates(templates)
        files, labels, self.lines = [], [], []
        for line, row in read_csv_rows(self.path, (image_key, label_key), delimiter):
            try:
                label = int(row[label_key])
            except ValueError:
                raise DataError(f"{self.path}: line {line}: label {row[label_key]!r} is not an integer") from None
            if not 0 <= label < len(self.classnames):
                raise DataError(
                    f"{self.path}: line {line}: label {label} outside 0..{len(self.classnames) - 1}"
                )
            files.append(row[image_key])
            labels.append(label)
            self.lines.append(line)
        if not files:
            raise DataError(f"{self.path}: no rows")
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self._params = dict(path=str(self.path), num_classes=len(self.classnames))

    def __len__(self) -> int:
        return len(self.files)

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        s = self.image_size
        out = torch.empty(len(indices), 3, s, s, dtype=torch.uint8)
        for row, i in enumerate(indices):
            out[row] = load_image_file(self.root / self.files[i], s, f"{self.path}: line {self.lines[i]}")
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": "labels_csv", **self._params}
