"""Labelled image datasets for zero-shot accuracy and ASR (``ClassificationDataset``).

Each carries its class names and prompt templates, so the target class of an attack is looked up by name
per dataset instead of the original code's hard-coded ImageNet index 954. Any zero-shot set is a folder of
images plus a class list plus templates: ``labels_csv`` (CleanCLIP's ``labels.csv`` + ``classes.py``) and
``imagefolder`` (torchvision's ``root/<class>/<image>`` tree) cover the usual layouts, and
``data.zeroshot_metadata`` reads the class lists and templates.
"""

from __future__ import annotations

import logging
import os
import re
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from clipbackdoor.data.datasets import (
    check_delimiter,
    generate_split,
    load_image_file,
    outside_folder,
    read_csv_columns,
)
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import EVAL_DATASETS
from clipbackdoor.data.strings import PackedStrings, StringsBuilder
from clipbackdoor.data.validate import ProblemLog, check_images, report
from clipbackdoor.data.zeroshot_metadata import resolve_classnames, resolve_templates
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)

# The extensions torchvision's ImageFolder accepts (``torchvision.datasets.folder.IMG_EXTENSIONS``).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_WNID = re.compile(r"n\d{8}")


class ClassificationDataset(Protocol):
    image_size: int
    labels: torch.Tensor  # int64 (N,)
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __len__(self) -> int: ...

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 images (B, 3, S, S)."""

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """Rows, usable rows, problems by reason, example problems (``data.validate``)."""

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
        where: str = "data.eval",
    ) -> None:
        from clipbackdoor.data import synthetic

        seed = experiment_seed if seed is None else seed
        self.image_size = image_size
        data = generate_split(num_samples, split=split, seed=seed, where=where, image_size=image_size,
                              difficulty=difficulty)
        self.images, self.labels = data.images, data.labels
        self.classnames = tuple(synthetic.CLASSNAMES)
        self.templates = tuple(synthetic.TEMPLATES)
        self._params = dict(num_samples=num_samples, split=split, seed=seed, difficulty=difficulty)

    def __len__(self) -> int:
        return len(self.labels)

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        return report(len(self), len(self), {}, [])

    def describe(self) -> dict[str, Any]:
        return {"name": "synthetic", **self._params}


class _ImageFiles:
    """Images stored as files under ``root``: loading and checking, shared by the file-based sets.

    Subclasses set ``root``, ``files`` (paths relative to ``root``) and ``image_size``.
    """

    root: Path
    files: PackedStrings
    image_size: int

    def _where(self, index: int) -> str:
        """Where image ``index`` comes from, for messages (file, or file and line)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.files)

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        s = self.image_size
        out = torch.empty(len(indices), 3, s, s, dtype=torch.uint8)
        for row, i in enumerate(indices):
            out[row] = load_image_file(self.root / self.files[i], s, self._where(i))
        return out

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """Every image must exist and, with ``decode``, decode: evaluation has no skip mode, so each
        problem found here would stop a run."""
        problems = ProblemLog()
        root = str(self.root)
        paths = (os.path.join(root, f) for f in self.files)
        for i, reason, message in check_images(paths, workers, decode=decode):
            problems.add(reason, f"{self._where(i)}: {message}")
        usable = len(self) - sum(problems.counts.values())
        return report(len(self), usable, problems.counts, problems.examples)


@EVAL_DATASETS.register("labels_csv")
class LabelsCsvClassification(_ImageFiles):
    """CleanCLIP's ImageNet layout: a ``labels.csv`` with ``image,label`` (0-based class index).

    CleanCLIP's folder also holds ``classes.py``; point both ``classnames`` and ``templates`` at it.

    Args:
        path: the labels CSV, or the folder that holds ``labels.csv``.
        classnames: ``imagenet``, a list, a ``classes.py``, or a file with one name per line.
        templates: ``openai_imagenet``, ``simple_imagenet``, a list, a ``classes.py``, or a file.
        allow_outside_paths: accept image paths that are absolute or climb out of the CSV's folder (off:
            such a row is an error naming its line).
        where: this section's config path, for error messages (the framework passes it).
    """

    def __init__(
        self,
        path: str,
        classnames: str | list[str] = "imagenet",
        templates: str | list[str] = "openai_imagenet",
        image_key: str = "image",
        label_key: str = "label",
        delimiter: str = ",",
        allow_outside_paths: bool = False,
        image_size: int = 224,
        where: str = "data.eval",
    ) -> None:
        p = Path(path)
        self.path = p / "labels.csv" if p.is_dir() else p
        self.root = self.path.parent
        self.image_size = image_size
        self.classnames = resolve_classnames(classnames, where)
        self.templates = resolve_templates(templates, where)
        check_delimiter(delimiter, where)
        files, labels, lines = StringsBuilder(), array("q"), array("q")
        for line, (file, raw) in read_csv_columns(self.path, (image_key, label_key), delimiter):
            if not allow_outside_paths and outside_folder(file):
                raise DataError(
                    f"{self.path}: line {line}: image path {file!r} is outside the CSV's folder {self.root} "
                    f"(absolute, or climbing out with '..'); set {where}.allow_outside_paths=true to read it"
                )
            try:
                label = int(raw)
            except ValueError:
                raise DataError(f"{self.path}: line {line}: label {raw!r} is not an integer") from None
            if not 0 <= label < len(self.classnames):
                raise DataError(
                    f"{self.path}: line {line}: label {label} outside 0..{len(self.classnames) - 1}"
                )
            files.append(file)
            labels.append(label)
            lines.append(line)
        if not len(files):
            raise DataError(f"{self.path}: no rows")
        self.files = files.build()
        self.lines = np.frombuffer(lines, dtype=np.int64)
        self.labels = torch.tensor(np.frombuffer(labels, dtype=np.int64))
        self._params = dict(path=str(self.path), num_classes=len(self.classnames))

    def _where(self, index: int) -> str:
        return f"{self.path}: line {self.lines[index]}"

    def describe(self) -> dict[str, Any]:
        return {"name": "labels_csv", **self._params}


@EVAL_DATASETS.register("imagefolder")
class ImageFolderClassification(_ImageFiles):
    """A torchvision ImageFolder tree: ``path/<class folder>/.../<image>``.

    Label k is the k-th class folder in sorted order, and the images of a class are found recursively in
    sorted order with torchvision's extensions (any case), exactly as ``torchvision.datasets.ImageFolder``
    (and so ``ImageNet``) numbers them; other files are ignored.

    Args:
        path: the root folder.
        classnames: the name of each class folder, in sorted folder order: ``folders`` (the folder names,
            underscores read as spaces), ``imagenet`` (open_clip's 1,000 names for ImageNet's WordNet-id
            folders ``n01440764``...), a list, a ``classes.py``, or a file with one name per line.
        templates: ``openai_imagenet``, ``simple_imagenet``, a list, a ``classes.py``, or a file.
        where: this section's config path, for error messages (the framework passes it).
    """

    def __init__(
        self,
        path: str,
        classnames: str | list[str] = "folders",
        templates: str | list[str] = "openai_imagenet",
        image_size: int = 224,
        where: str = "data.eval",
    ) -> None:
        self.root = Path(path)
        self.image_size = image_size
        folders, self.files, labels, ignored = scan_image_folder(self.root)
        self.labels = torch.tensor(labels)
        self.classnames = _folder_classnames(classnames, folders, self.root, where)
        self.templates = resolve_templates(templates, where)
        if ignored:
            log.info("%s: ignored %d files without an image extension (%s)", self.root, ignored,
                     " ".join(IMG_EXTENSIONS))
        self._params = dict(path=str(self.root), num_classes=len(folders))

    def _where(self, index: int) -> str:
        return str(self.root / self.files[index])

    def describe(self) -> dict[str, Any]:
        return {"name": "imagefolder", **self._params}


def scan_image_folder(root: Path) -> tuple[list[str], PackedStrings, np.ndarray, int]:
    """Sorted class folders, image paths relative to ``root``, their labels (int64) and the number of
    files skipped for their extension, in torchvision ``ImageFolder``'s order."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>, as torchvision's ImageFolder)")
    files, labels = StringsBuilder(), array("q")
    empty, ignored = [], 0
    for label, folder in enumerate(folders):
        before = len(files)
        for dirpath, _, names in sorted(os.walk(root / folder, followlinks=True)):
            rel = os.path.relpath(dirpath, root)
            for name in sorted(names):
                if name.lower().endswith(IMG_EXTENSIONS):
                    files.append(os.path.join(rel, name))
                    labels.append(label)
                else:
                    ignored += 1
        if len(files) == before:
            empty.append(folder)
    if empty:
        raise DataError(
            f"{root}: no images in class folder(s) {', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''} "
            f"({len(empty)} of {len(folders)}; image extensions: {' '.join(IMG_EXTENSIONS)})"
        )
    return folders, files.build(), np.frombuffer(labels, dtype=np.int64), ignored


def _folder_classnames(spec: str | list[str], folders: list[str], root: Path, where: str) -> tuple[str, ...]:
    """The class names of the sorted ``folders``, checked against their number and naming."""
    wnids = all(_WNID.fullmatch(f) for f in folders)
    if spec == "folders":
        if wnids:
            raise ConfigError(
                f"{where}.classnames: the folders of {root} are WordNet ids ({folders[0]}, ...), not class "
                "names; set classnames: imagenet for ImageNet, or give the names (a list or a file)"
            )
        return tuple(f.replace("_", " ") for f in folders)
    if spec == "imagenet" and not wnids:
        bad = [f for f in folders if not _WNID.fullmatch(f)]
        raise DataError(
            f"{root}: classnames 'imagenet' names ImageNet's WordNet-id folders (n01440764, ...) by their "
            f"sorted position, but {len(bad)} folder(s) are not WordNet ids ({', '.join(bad[:3])}); "
            "use classnames: folders, or a class list in sorted folder order"
        )
    names = resolve_classnames(spec, where)
    if len(names) != len(folders):
        raise DataError(
            f"{root}: {len(folders)} class folders ({folders[0]} ... {folders[-1]}) but {len(names)} class "
            f"names from {where}.classnames; they are matched by position, one name per sorted folder"
        )
    return names
