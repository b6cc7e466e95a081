"""Checking datasets before a long run: the report every dataset's ``validate()`` returns, and the
parallel file checks behind it.

``validate(decode=False, workers=1)`` on a dataset returns ``{"rows", "usable", "skipped", "examples"}``:
how many rows the source holds, how many a run would use, what would be dropped by reason, and up to
``MAX_EXAMPLES`` problems naming their file and line (or shard and key). ``clipbackdoor data check``
prints it.

Stats and decodes run in a thread pool: both wait on the disk or the network, and Pillow's decoders
release the GIL, so threads scale without pickling paths to worker processes. Work goes out in chunks
with a bounded number in flight, so checking millions of files holds only a few thousand paths at a time.
"""

from __future__ import annotations

import os
import stat
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from PIL import Image

from clipbackdoor.registry import accepted_kwargs

MAX_EXAMPLES = 20
# Paths per task: large enough that the pool's per-task cost is noise next to a local stat (~2 us).
CHUNK = 256

T = TypeVar("T")
R = TypeVar("R")


def report(rows: int, usable: int, skipped: Mapping[str, int], examples: Iterable[str]) -> dict[str, Any]:
    """The dictionary ``validate()`` returns (examples capped at ``MAX_EXAMPLES``)."""
    return {
        "rows": int(rows),
        "usable": int(usable),
        "skipped": {reason: int(n) for reason, n in skipped.items() if n},
        "examples": list(islice(examples, MAX_EXAMPLES)),
    }


class ProblemLog:
    """Counts dropped rows by reason and keeps the first ``MAX_EXAMPLES`` messages."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)


def map_chunked(fn: Callable[[T], R], items: Iterable[T], workers: int, chunk: int = CHUNK) -> Iterator[R]:
    """``map(fn, items)`` in order, on ``workers`` threads, a chunk of items per task.

    At most ``2 * workers`` chunks are in flight, so ``items`` may be a generator over millions of rows.
    An exception raised by ``items`` surfaces after the results of the items before it, as with ``map``.
    ``workers <= 1`` runs in the calling thread.
    """
    it = iter(items)
    if workers <= 1:
        yield from map(fn, it)
        return

    def run(batch: list[T]) -> list[R]:
        return [fn(x) for x in batch]

    with ThreadPoolExecutor(workers, thread_name_prefix="clipbackdoor-check") as pool:
        pending: deque = deque()
        error: BaseException | None = None
        while True:
            while error is None and len(pending) < 2 * workers:
                batch = []
                try:
                    for x in it:
                        batch.append(x)
                        if len(batch) == chunk:
                            break
                except Exception as err:  # noqa: BLE001  re-raised below, after the items before it
                    error = err
                if batch:
                    pending.append(pool.submit(run, batch))
                if len(batch) < chunk:
                    break
            if not pending:
                if error is not None:
                    raise error
                return
            yield from pending.popleft().result()


def is_file(path: str) -> bool:
    """``Path.is_file`` without building a Path (this runs once per row of a multi-million-row CSV)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def image_problem(path: str) -> tuple[str, str] | None:
    """``(reason, message)`` if the image at ``path`` cannot be decoded to RGB, else None."""
    try:
        with Image.open(path) as image:
            image.convert("RGB")  # decodes every pixel: a truncated file fails here, not in open()
    except FileNotFoundError:
        return "image file not found", f"image file not found: {path}"
    except Exception as err:  # noqa: BLE001  any failure means a run could not use the image
        return "unreadable image", f"cannot read image {path}: {type(err).__name__}: {err}"
    return None


def check_images(paths: Iterable[str], workers: int = 1, *, decode: bool = True) -> Iterator[tuple[int, str, str]]:
    """``(position, reason, message)`` for every path that is missing or, with ``decode``, unreadable."""
    check = image_problem if decode else _missing
    for i, problem in enumerate(map_chunked(check, paths, workers)):
        if problem is not None:
            yield i, *problem


def _missing(path: str) -> tuple[str, str] | None:
    return None if is_file(path) else ("image file not found", f"image file not found: {path}")


def build_for_check(registry, section: Mapping[str, Any] | str, where: str, **extra: Any):
    """Build a dataset section as ``clipbackdoor data check`` sees it: with ``on_error: skip`` where the
    dataset has that option, so every problem is counted instead of stopping the build at the first."""
    section = {"name": section} if isinstance(section, str) else dict(section)
    if "name" in section and "on_error" in accepted_kwargs(registry.get(section["name"])):
        section["on_error"] = "skip"
    return registry.build(section, where, **extra)
