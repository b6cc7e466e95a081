"""WebDataset tar shards (``{key}.jpg`` + ``{key}.txt`` per sample, e.g. CC3M from img2dataset) as pairs.

Construction scans every shard once: it reads the tar headers and the small caption members, seeks past
the image data, and keeps one index row per usable sample (global index, key, shard, caption, and where
its image bytes lie). Indices run over the shards in the given order and the samples in tar order, so a
poison manifest drawn from the index names the same samples on every machine that holds the same shards.
The index lives in numpy arrays and ``PackedStrings``; 3M samples cost no per-row Python objects.

Training reads the shards sequentially, through the ``webdataset`` package (``data.streaming``); the
stored offsets also give random access (``load_images``), which poison export and validation sets use.
Samples are grouped exactly as ``webdataset`` groups them: consecutive members sharing the path up to the
first dot of the file name (``__key__``), with lower-cased extensions.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import multiprocessing
import re
import tarfile
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipbackdoor.data.datasets import _LETTER, check_on_error
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import DATASETS
from clipbackdoor.data.strings import StringsBuilder
from clipbackdoor.data.transforms import resize_center_crop, to_pil
from clipbackdoor.data.validate import ProblemLog, map_chunked, report
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)

# Members ``webdataset`` never groups into samples (``__meta__`` files and folders).
_META = re.compile(r"__[^/]*__($|/)")


def expand_shards(urls: str | Sequence[str], where: str = "data.train") -> list[Path]:
    """Shard paths from a brace pattern (``/data/cc3m-{000000..000331}.tar``), a list of paths, or a folder
    (all its ``*.tar``, sorted). Only local files: the index needs random access."""
    from webdataset.shardlists import expand_urls

    if isinstance(urls, str):
        folder = Path(urls)
        if folder.is_dir():
            paths = sorted(folder.glob("*.tar"))
            if not paths:
                raise DataError(f"{where}.urls: no *.tar shards in the folder {folder}")
            return paths
        names = expand_urls(urls)
    else:
        names = [str(u) for u in urls]
    if not names:
        raise ConfigError(f"{where}.urls: no shards given")
    remote = [n for n in names if "://" in n or n.startswith("pipe:")]
    if remote:
        raise ConfigError(f"{where}.urls: only local shard files are supported (got {remote[0]!r}); "
                          "download the shards first")
    paths = [Path(n) for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{where}.urls: shard file not found: {missing[0]}{more}")
    return paths


def decode_image(data: bytes, size: int, where: str) -> torch.Tensor:
    """Encoded image bytes -> uint8 (3, size, size); unreadable bytes raise DataError naming ``where``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return resize_center_crop(image, size)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: cannot read image: {err}") from None


def _scan_shard(path: Path, image_keys: Sequence[str], caption_key: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard in tar order, as ``webdataset`` groups them, without reading image data.

    Each is a dict with ``key``, ``image`` (extension, offset, size) or None, ``caption`` (bytes) or None,
    and ``problem`` (reason, detail) for a duplicated member or a member cut off by the end of the file.
    Damage after the last complete member comes last, as ``{"key": None, "problem": ...}``: ``tarfile``,
    and so ``webdataset``, silently ends the shard at a broken header.
    """
    from webdataset.tariterators import base_plus_ext

    file_size = path.stat().st_size
    current: dict[str, Any] | None = None
    images: dict[str, tuple[int, int]] = {}

    def finish(group):
        ext = next((e for e in image_keys if e in images), None)
        group["image"] = (ext, *images[ext]) if ext else None
        del group["suffixes"]
        return group

    try:
        # Uncompressed only: the stored offsets are byte positions in the file (random access).
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path}: not a readable (uncompressed) tar file: {err}") from None
    with tar:
        while True:
            try:
                info = tar.next()
            except tarfile.TarError as err:
                raise DataError(f"{path}: not a readable tar file: {err}") from None
            if info is None:
                break
            tar.members.clear()  # a shard can hold 100k members; keep memory flat
            name = info.name
            if not info.isreg() or _META.match(name) or ("/" not in name and name.startswith("__")
                                                       and name.endswith("__")):
                continue
            prefix, suffix = base_plus_ext(name)
            if prefix is None:
                continue
            suffix = suffix.lower()
            if current is None or prefix != current["key"]:
                if current is not None:
                    yield finish(current)
                current, images = {"key": prefix, "caption": None, "problem": None, "suffixes": set()}, {}
            if info.offset_data + info.size > file_size:
                # Nothing can follow a member cut off by the end of the file (an interrupted download).
                current["problem"] = ("truncated shard", f"member {name} is cut off by the end of the file")
                yield finish(current)
                return
            if suffix in current["suffixes"]:
                current["problem"] = current["problem"] or ("duplicate member", f"member {name} appears twice")
                continue
            current["suffixes"].add(suffix)
            if suffix in image_keys:
                images[suffix] = (info.offset_data, info.size)
            elif suffix == caption_key:
                current["caption"] = tar.extractfile(info).read()
        # A complete archive ends with a zero block (or, from some writers, with the last member).
        end = tar.offset
        tar.fileobj.seek(end)
        block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if current is not None:
        yield finish(current)
    if block and (len(block) < tarfile.BLOCKSIZE or block.count(0) != len(block)):
        yield {"key": None, "problem": ("truncated shard", f"damaged or cut off at byte {end}; the members "
                                        "after it cannot be read")}


def _scan_or_error(path: Path, image_keys: Sequence[str], caption_key: str) -> list[dict[str, Any]] | DataError:
    """All samples of one shard, or the DataError that stopped the scan (for a process pool to return)."""
    try:
        return list(_scan_shard(path, image_keys, caption_key))
    except DataError as err:
        return err


def scan_shards(paths: Sequence[Path], image_keys: Sequence[str], caption_key: str,
                workers: int) -> Iterator[list[dict[str, Any]] | DataError]:
    """``_scan_or_error`` of every shard, in order. Parsing tar headers is Python-bound (~10-20k samples/s
    a core), so large sets of shards are scanned by up to ``workers`` forked processes, one per 8 shards."""
    processes = min(workers, len(paths) // 8)
    if processes <= 1:
        for path in paths:
            yield _scan_or_error(path, image_keys, caption_key)
        return
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))
    try:
        yield from pool.map(_scan_or_error, paths, itertools.repeat(image_keys), itertools.repeat(caption_key))
    finally:
        pool.shutdown(cancel_futures=True)  # a strict scan that stopped early does not wait for the rest


def _caption_problem(raw: bytes | None, caption_key: str) -> tuple[str, str, str]:
    """(caption, reason, detail); reason is empty for a usable caption."""
    if raw is None:
        return "", "no caption", f"no .{caption_key} member"
    try:
        caption = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        return "", "caption not UTF-8", f"caption is not UTF-8 ({err})"
    if not caption:
        return "", "empty caption", "empty caption"
    if not _LETTER.search(caption):
        return caption, "caption without letters", f"caption without letters {caption!r}"
    return caption, "", ""


@DATASETS.register("webdataset")
class WebDatasetPairs:
    """Image-caption pairs in WebDataset tar shards, streamed for training (``streaming = True``).

    Samples without an image member, or with a missing, empty, letter-free or non-UTF-8 caption, raise a
    DataError naming the shard and the key, or with ``on_error: skip`` are dropped and counted in
    ``skipped``. An image that cannot be decoded while training is dropped from its batch in skip mode.

    Args:
        urls: a brace pattern (``/data/cc3m-{000000..000331}.tar``), a list of shard paths, or a folder
            (all its ``*.tar``, sorted by name).
        image_keys: image extensions, in order of preference (the first a sample has wins).
        caption_key: extension of the caption member.
        on_error: ``raise`` or ``skip``.
        shuffle_buffer: samples in each loader worker's shuffle buffer while training.
        scan_workers: processes that index the shards at start-up, one per 8 shards at most (CC3M's 332
            shards of 10k samples take minutes on one core).
        where: this section's config path, for error messages (the framework passes it).
    """

    streaming = True

    def __init__(
        self,
        urls: str | list[str],
        image_keys: Sequence[str] = ("jpg", "png", "jpeg", "webp"),
        caption_key: str = "txt",
        on_error: str = "raise",
        shuffle_buffer: int = 1000,
        scan_workers: int = 8,
        image_size: int = 224,
        where: str = "data.train",
    ) -> None:
        self.urls = urls if isinstance(urls, str) else [str(u) for u in urls]
        self.shards = expand_shards(urls, where)
        self.image_keys = tuple(k.lower().lstrip(".") for k in image_keys)
        self.caption_key = caption_key.lower().lstrip(".")
        if not self.image_keys:
            raise ConfigError(f"{where}.image_keys: give at least one image extension")
        self.on_error = check_on_error(on_error, where)
        if shuffle_buffer < 0:
            raise ConfigError(f"{where}.shuffle_buffer: must be >= 0, got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer
        self.image_size = image_size
        # Samples dropped while indexing, by reason, with the first few messages (for ``validate``).
        self.problems = ProblemLog()
        self._build_index(scan_workers)
        self.skipped: Counter[str] = Counter(self.problems.counts)
        if self.skipped:
            log.warning("%s: skipped %d of %d samples (%s); first: %s", self.urls, sum(self.skipped.values()),
                        self.rows, dict(self.skipped), self.problems.examples[0])
        if not len(self.keys):
            detail = f" (skipped: {dict(self.skipped)})" if self.skipped else ""
            raise DataError(f"{self.urls}: no usable samples in {len(self.shards)} shard(s){detail}")

    def _build_index(self, scan_workers: int) -> None:
        keys, captions = StringsBuilder(), StringsBuilder()
        shard_of, offsets, sizes, exts = array("i"), array("q"), array("q"), array("b")
        self.rows = 0
        scans = scan_shards(self.shards, self.image_keys, self.caption_key, scan_workers)
        with contextlib.closing(scans):
            for s, (path, groups) in enumerate(zip(self.shards, scans)):
                for key, caption, (ext, offset, size) in self._usable(path, groups):
                    keys.append(key)
                    captions.append(caption)
                    shard_of.append(s)
                    offsets.append(offset)
                    sizes.append(size)
                    exts.append(self.image_keys.index(ext))
        self.keys, self.captions = keys.build(), captions.build()
        self.shard_of = np.frombuffer(shard_of, dtype=np.int32) if len(shard_of) else np.zeros(0, np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.exts = np.asarray(exts, dtype=np.int8)
        # Usable samples of shard s are the index range starts[s] .. starts[s + 1].
        counts = np.bincount(self.shard_of, minlength=len(self.shards))
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _usable(self, path: Path, groups: list[dict[str, Any]] | DataError) -> Iterator[tuple[str, str, tuple]]:
        """(key, caption, image location) of the usable samples of one scanned shard; problems raise or are
        counted."""
        if isinstance(groups, DataError):
            # In skip mode the shard is left out whole: the loader could not read past the damage either.
            if self.on_error == "raise":
                raise groups
            self._problem(path, None, "unreadable shard", str(groups).split(": ", 1)[-1])
            return
        if groups and groups[-1]["key"] is None:
            # Damage first: it explains an incomplete last sample, which the loop below reports too.
            self._problem(path, None, *groups.pop()["problem"])
        seen: set[str] = set()
        for group in groups:
            key = group["key"]
            self.rows += 1
            caption, reason, detail = "", "", ""
            if key in seen:
                reason, detail = "duplicate key", "the key appears twice in the shard"
            elif group["problem"]:
                reason, detail = group["problem"]
            elif group["image"] is None:
                reason = "no image"
                detail = f"no image member (looked for {', '.join('.' + e for e in self.image_keys)})"
            else:
                caption, reason, detail = _caption_problem(group["caption"], self.caption_key)
            seen.add(key)
            if reason:
                self._problem(path, key, reason, detail)
                continue
            yield key, caption, group["image"]

    def _problem(self, path: Path, key: str | None, reason: str, detail: str) -> None:
        message = f"{path}: {detail}" if key is None else f"{path}: sample {key!r}: {detail}"
        if self.on_error == "raise":
            raise DataError(message)
        self.problems.add(reason, message)

    # -- the PairDataset interface -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    def caption(self, index: int) -> str:
        return self.captions[index]

    def key(self, index: int) -> str:
        return self.keys[index]

    def shard(self, index: int) -> Path:
        return self.shards[int(self.shard_of[index])]

    def sample_id(self, index: int) -> str:
        return f"{self.shard(index).name}/{self.keys[index]}"

    def where(self, index: int) -> str:
        """The sample as an error message names it: shard path and key."""
        return f"{self.shard(index)}: sample {self.keys[index]!r}"

    def load_images(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Random access through the indexed offsets (export, validation); training streams instead."""
        s = self.image_size
        images = torch.zeros(len(indices), 3, s, s, dtype=torch.uint8)
        keep = torch.ones(len(indices), dtype=torch.bool)
        order = sorted(range(len(indices)), key=lambda r: (int(self.shard_of[indices[r]]), indices[r]))
        handle, open_shard = None, -1
        try:
            for row in order:
                i = indices[row]
                if int(self.shard_of[i]) != open_shard:
                    if handle is not None:
                        handle.close()
                    open_shard = int(self.shard_of[i])
                    handle = open(self.shards[open_shard], "rb")
                handle.seek(int(self.offsets[i]))
                try:
                    images[row] = decode_image(handle.read(int(self.sizes[i])), s, self.where(i))
                except DataError as err:
                    if self.on_error == "raise":
                        raise
                    log.warning("skipping: %s", err)
                    self.skipped["unreadable image"] += 1
                    keep[row] = False
        finally:
            if handle is not None:
                handle.close()
        return images, keep

    def describe(self) -> dict[str, Any]:
        return {"name": "webdataset", "urls": self.urls, "shards": len(self.shards), "rows": len(self),
                "skipped": dict(self.skipped)}

    # -- streaming ---------------------------------------------------------------------------------
    def shard_range(self, shard: int) -> range:
        return range(int(self.starts[shard]), int(self.starts[shard + 1]))

    def stream_shard(self, shard: int) -> Iterator[tuple[int, bytes]]:
        """(global index, encoded image bytes) of the usable samples of one shard, read sequentially with
        ``webdataset``; samples the index dropped are passed over."""
        from webdataset.tariterators import tarfile_samples

        path = self.shards[shard]
        # Built per shard, in the loader worker, from the shared index arrays: a few thousand strings.
        lookup = {self.keys[i]: i for i in self.shard_range(shard)}

        def handler(exn: Exception) -> bool:
            if isinstance(exn, ValueError) and "duplicate file name" in str(exn):
                return True  # such a sample is not in the index; webdataset would stop here
            if self.on_error == "skip":
                log.warning("%s: stopped reading the shard: %s", path, exn)
                return False
            raise DataError(f"{path}: cannot read the shard: {exn}") from None

        for sample in tarfile_samples([{"url": str(path)}], handler=handler):
            # pop: a key seen again later in the shard is a duplicate the index left out.
            index = lookup.pop(sample["__key__"], None)
            if index is not None:
                yield index, sample[self.image_keys[int(self.exts[index])]]

    def validate(self, decode: bool = False, workers: int = 1) -> dict[str, Any]:
        """What a run would use and drop (``data.validate``): the samples the index left out and, with
        ``decode``, every usable image that cannot be decoded (``workers`` threads decode).

        Returns:
            ``{"rows": samples found, "usable": samples a run would train on, "skipped": {reason: count},
            "examples": the first problems, each naming shard and key}``.
        """
        problems = ProblemLog()
        problems.counts.update(self.problems.counts)
        problems.examples.extend(self.problems.examples)
        usable = len(self)
        if decode:
            def check(item: tuple[int, bytes]) -> str | None:
                index, data = item
                try:
                    decode_image(data, self.image_size, self.where(index))
                except DataError as err:
                    return str(err)
                return None

            samples = itertools.chain.from_iterable(self.stream_shard(s) for s in range(len(self.shards)))
            for message in map_chunked(check, samples, workers):
                if message is not None:
                    problems.add("unreadable image", message)
                    usable -= 1
        return report(self.rows, usable, problems.counts, problems.examples)


def write_shards(
    pairs,
    out_dir: str | Path,
    *,
    samples_per_shard: int = 1000,
    image_format: str = "png",
    prefix: str = "shard",
    chunk: int = 256,
) -> list[Path]:
    """Write any pair dataset as WebDataset shards ``{prefix}-000000.tar`` ... of ``{key}.{png|jpg}`` +
    ``{key}.txt`` members (keys are the zero-padded dataset indices); returns the shard paths.

    Unreadable images of ``pairs`` are left out. Member times are fixed, so the shards are reproducible.
    """
    import webdataset as wds

    formats = {"png": "PNG", "jpg": "JPEG"}
    if image_format not in formats:
        raise ConfigError(f"image_format: must be one of {', '.join(formats)}, got {image_format!r}")
    if samples_per_shard < 1:
        raise ConfigError(f"samples_per_shard: must be >= 1, got {samples_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(pairs)
    width = max(9, len(str(n - 1)))
    paths = []
    for s, first in enumerate(range(0, n, samples_per_shard)):
        path = out / f"{prefix}-{s:06d}.tar"
        tmp = path.with_name(path.name + ".tmp")
        with wds.TarWriter(str(tmp), encoder=False, mtime=0) as writer:  # an int: no pax header per member
            for start in range(first, min(first + samples_per_shard, n), chunk):
                indices = list(range(start, min(start + chunk, first + samples_per_shard, n)))
                images, keep = pairs.load_images(indices)
                for row, i in enumerate(indices):
                    if not keep[row]:
                        continue
                    buffer = io.BytesIO()
                    to_pil(images[row]).save(buffer, format=formats[image_format], quality=95)
                    writer.write({"__key__": f"{i:0{width}d}", image_format: buffer.getvalue(),
                                  "txt": pairs.caption(i).encode("utf-8")})
        tmp.replace(path)
        paths.append(path)
    return paths
