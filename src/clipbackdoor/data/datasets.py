"""Image-caption pair datasets behind one interface (``PairDataset``).

A dataset hands out uint8 images at the model's resolution and raw caption strings, by index and in
batches; poisoning, tokenization and augmentation happen later in ``data.pipeline``. ``csv`` opens images
lazily from a CleanCLIP-format CSV; ``synthetic`` holds generated pairs in memory and gathers whole
batches with one tensor index, which is what makes CPU pre-training fast.
"""

from __future__ import annotations

import csv
import itertools
import logging
import operator
import os
import re
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import DATASETS
from clipbackdoor.data.strings import StringsBuilder
from clipbackdoor.data.transforms import resize_center_crop
from clipbackdoor.data.validate import ProblemLog, check_images, is_file, map_chunked, report
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

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """Rows, usable rows, what would be skipped by reason, example problems (``data.validate``)."""

    def describe(self) -> dict[str, Any]: ...


def load_image_file(path: Path, size: int, where: str) -> torch.Tensor:
    """Open ``path`` and preprocess it; a missing or corrupt file raises DataError naming it."""
    try:
        with Image.open(path) as image:
            return resize_center_crop(image, size)
    except FileNotFoundError:
        raise DataError(f"{where}: image file not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise DataError(f"{where}: cannot read image {path}: {err}") from None


def check_delimiter(value: str, where: str) -> str:
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n\"":
        raise ConfigError(f"{where}.delimiter: must be one character (not a quote or a newline), got {value!r}")
    return value


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
        where: this section's config path, for error messages (the framework passes it).
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
        where: str = "data.train",
    ) -> None:
        self.seed = experiment_seed if seed is None else seed
        self.split = split
        self.image_size = image_size
        self._params = dict(num_samples=num_samples, split=split, seed=self.seed, difficulty=difficulty,
                            caption_noise=caption_noise, image_size=image_size)
        data = generate_split(num_samples, split=split, seed=self.seed, where=where, image_size=image_size,
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

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """Generated pairs are always usable (``data.validate``)."""
        return report(len(self), len(self), {}, [])

    def describe(self) -> dict[str, Any]:
        return {"name": "synthetic", **self._params}


@DATASETS.register("csv")
class CsvPairs:
    """A CleanCLIP-format CSV: an image path relative to the CSV's folder and a caption per row.

    A leading unnamed index column (written by pandas) and extra columns such as ``is_backdoor`` are
    ignored. Rows that are not UTF-8, have an empty or letter-free caption, an image path outside the CSV's
    folder (unless ``allow_outside_paths``) or a missing image file raise a DataError naming the line, or
    with ``on_error: skip`` are dropped and counted. A corrupt image found while
    training is dropped from its batch in skip mode.

    The CSV is streamed row by row into packed arrays (``data.strings``): a 3M-row CC3M-like index holds
    ~390 MiB (Python lists took ~820 MiB; ``benchmarks/bench_csv_index.py``, docs/data.md), and forked
    loader workers share its pages instead of copying them as reference counts change.

    Args:
        path: the CSV file.
        image_key, caption_key: column names.
        delimiter: field separator.
        on_error: ``raise`` or ``skip``.
        check_files: stat every image file up front, so a missing file fails before training starts. On a
            local disk with a warm cache that adds ~5 s per million rows. On network storage a stat is a
            round trip (~1 ms): about an hour for 3M files one at a time, which is why the stats run ahead of
            the reader on ``check_threads`` threads (~4 min on 16). Turn it off for a large index already
            checked with ``clipbackdoor data check``: a file missing later still fails (or, with
            ``on_error: skip``, is dropped from its batch) when its batch is loaded.
        check_threads: threads that stat the files; a network file system serves many at once.
        allow_outside_paths: read image paths that are absolute or climb out of the CSV's folder with
            ``..``. Off by default: a CSV from elsewhere should not make a run read arbitrary files, so such
            rows are bad rows (an error naming the line, or skipped and counted).
        where: this section's config path, for error messages (the framework passes it).
    """

    def __init__(
        self,
        path: str,
        image_key: str = "image",
        caption_key: str = "caption",
        delimiter: str = ",",
        on_error: str = "raise",
        check_files: bool = True,
        check_threads: int = 16,
        allow_outside_paths: bool = False,
        image_size: int = 224,
        where: str = "data.train",
    ) -> None:
        self.path = Path(path)
        self.where = where
        self.allow_outside_paths = allow_outside_paths
        self.root = self.path.parent
        self.image_size = image_size
        self.on_error = check_on_error(on_error, where)
        check_delimiter(delimiter, where)
        self.checked_files = check_files
        self._params = dict(path=str(path), image_key=image_key, caption_key=caption_key, delimiter=delimiter)
        # Rows dropped while reading, by reason, with the first few messages (for ``validate``).
        self.problems = ProblemLog()
        rows = read_csv_columns(self.path, (image_key, caption_key), delimiter, undecodable_rows="yield")
        self.files, self.captions, self.lines, self.num_rows = self._index(rows, check_files, check_threads)
        self.skipped: Counter[str] = Counter(self.problems.counts)
        if self.skipped:
            log.warning("%s: skipped %d rows (%s)", self.path, sum(self.skipped.values()), dict(self.skipped))
        if not len(self.files):
            detail = f" (skipped: {dict(self.skipped)})" if self.skipped else ""
            raise DataError(f"{self.path}: no usable rows{detail}")

    def _index(self, rows, check_files: bool, threads: int):
        """Packed paths, captions and line numbers of the good rows; bad rows raise or are logged."""
        root = str(self.root)

        def with_stat(row):
            file = row[1][0].strip()
            # A path that leaves the folder is not even looked at unless the user allowed it.
            if not self.allow_outside_paths and outside_folder(file):
                return row, False
            return row, is_file(os.path.join(root, file))

        # The stats run ahead of this loop on threads; the rows still come out in file order.
        checked = map_chunked(with_stat, rows, threads) if check_files else zip(rows, itertools.repeat(True))
        files, captions, lines = StringsBuilder(), StringsBuilder(), array("q")
        num_rows = 0
        for (line, (file, caption)), found in checked:
            num_rows += 1
            file, caption = file.strip(), caption.strip()
            problem = _row_problem(file, caption, found, self.root, self.allow_outside_paths, self.where)
            if problem:
                reason, message = problem
                message = f"{self.path}: line {line}: {message}"
                if self.on_error == "raise":
                    raise DataError(message)
                self.problems.add(reason, message)
                continue
            files.append(file)
            captions.append(caption)
            lines.append(line)
        return files.build(), captions.build(), np.frombuffer(lines, dtype=np.int64), num_rows

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

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """What a run would use and drop (``data.validate``): the rows dropped while reading, plus every
        image that is missing (when ``check_files`` was off) or, with ``decode``, cannot be decoded."""
        problems = ProblemLog()
        problems.counts.update(self.problems.counts)
        problems.examples.extend(self.problems.examples)
        usable = len(self)
        if decode or not self.checked_files:
            root = str(self.root)
            paths = (os.path.join(root, f) for f in self.files)
            for i, reason, message in check_images(paths, workers, decode=decode):
                problems.add(reason, f"{self.path}: line {self.lines[i]}: {message}")
                usable -= 1
        return report(self.num_rows, usable, problems.counts, problems.examples)

    def describe(self) -> dict[str, Any]:
        return {"name": "csv", **self._params, "rows": len(self), "skipped": dict(self.skipped)}


def _row_problem(file: str, caption: str, found: bool, root: Path, allow_outside: bool,
                 where: str) -> tuple[str, str] | None:
    """``(reason, message)`` of a bad row; the reason is what ``skipped`` counts."""
    if not (file.isascii() and caption.isascii()):
        bad = undecodable(file) or undecodable(caption)  # a byte is 0x80..0xff, never 0
        if bad is not None:
            return "not valid UTF-8", not_utf8_message(bad)
    if not file:
        return "empty image path", "empty image path"
    if not allow_outside and outside_folder(file):
        return "image path outside the CSV's folder", (
            f"image path {file!r} is outside the CSV's folder {root} (absolute, or climbing out with '..'); "
            f"set {where}.allow_outside_paths=true to read it"
        )
    if not _LETTER.search(caption):
        if not caption:
            return "empty caption", "empty caption"
        return "caption without letters", f"caption without letters {caption[:200]!r}"
    if not found:
        return "image file not found", f"image file not found: {root / file}"
    return None


def outside_folder(file: str) -> bool:
    """Whether the image path ``file`` of a CSV row leaves the CSV's folder: absolute, or climbing out
    with ``..`` (judged on the text; links inside the folder may point anywhere)."""
    # Once per row of a multi-million-row CSV: two C calls for the common case. (POSIX paths, as the rest
    # of the tool: os.path.isabs is this startswith, at three times the cost.)
    if file.startswith(os.sep):
        return True
    if ".." not in file:
        return False
    norm = os.path.normpath(file)
    return norm == os.pardir or norm.startswith(os.pardir + os.sep)


#: The csv module refuses fields longer than 131,072 characters by default. Captions that long are rare but
#: real (scraped alt text), and the tokenizer truncates them; this limit only guards memory.
FIELD_LIMIT = 1 << 24
#: A row whose quoted field runs over more physical lines than this is a quote left open, which would
#: otherwise swallow the rest of the file into one caption.
MAX_LINES_PER_ROW = 1000


def undecodable(text: str) -> int | None:
    """The first byte that was not valid UTF-8 in ``text`` read with ``errors="surrogateescape"``, else None."""
    # Once per value of every row of a multi-million-row CSV: the common cases stay in C.
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # only the escapes cannot be encoded
        return ord(text[err.start]) - 0xDC00
    return None


def not_utf8_message(byte: int) -> str:
    return f"not valid UTF-8 (byte 0x{byte:02x}); save the file as UTF-8"


def read_csv_columns(path: Path, columns: Sequence[str], delimiter: str, *,
                     undecodable_rows: str = "raise") -> Iterator[tuple[int, tuple[str, ...]]]:
    """Stream ``(line number, values of columns)`` from a CSV, checking the header and each row's width.

    The file is read as UTF-8 (a byte-order mark is allowed). The line number is that of the row's last
    physical line, as ``csv`` counts them. Blank lines are skipped; a row with more fields than the header,
    or too few to reach a requested column, or whose quoted field runs on for ``MAX_LINES_PER_ROW`` lines,
    is a DataError naming the line, and so is a header that is not UTF-8. A requested value that is not
    UTF-8 raises too, unless ``undecodable_rows="yield"``: then the row comes out with its bad bytes as
    surrogate escapes, which ``undecodable`` finds, for the caller to skip and count.
    """
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, [])
            bad = next((b for b in map(undecodable, header) if b is not None), None)
            if bad is not None:
                raise DataError(f"{path}: line {reader.line_num}: the header is {not_utf8_message(bad)}")
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(map(repr, missing))}; the header has "
                    f"{', '.join(map(repr, header)) or 'no columns'} (set image_key/caption_key/delimiter)"
                )
            # A repeated column name means its last occurrence, as in csv.DictReader.
            position = {name: i for i, name in enumerate(header)}
            index = [position[c] for c in columns]
            width, needed = len(header), max(index) + 1
            pick = (lambda row: (row[index[0]],)) if len(index) == 1 else operator.itemgetter(*index)
            check_text = undecodable_rows == "raise"
            previous = reader.line_num
            # Once per row of a multi-million-row CSV: only cheap checks on the common path.
            for row in reader:
                line = reader.line_num
                if line - previous > MAX_LINES_PER_ROW:
                    raise DataError(
                        f"{path}: line {previous + 1}: a quoted field runs on over {line - previous} lines (a "
                        "quote left open?)"
                    )
                previous = line
                if not row:
                    continue
                if not needed <= len(row) <= width:
                    raise DataError(f"{path}: line {line}: expected {width} fields, got a different count")
                values = pick(row)
                if check_text and any(map(undecodable, values)):
                    bad = next(b for b in map(undecodable, values) if b is not None)
                    raise DataError(f"{path}: line {line}: {not_utf8_message(bad)}")
                yield line, values
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV: {err}") from None
