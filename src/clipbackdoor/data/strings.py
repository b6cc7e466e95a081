"""Millions of strings without millions of Python objects.

A Python ``str`` costs about 50 bytes of header plus its text, and a list adds 8 bytes a pointer; a 3M-row
CC3M index held as lists of paths and captions takes 823 MiB (386 MiB packed; benchmarks/bench_csv_index.py)
and is copied page by page into every forked loader worker as reference counts change. ``PackedStrings`` keeps the UTF-8 bytes of all
strings in one numpy buffer and their end offsets in another, so the index is two arrays whose pages
workers share untouched, and a string is only built when it is read.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

import numpy as np


class PackedStrings:
    """An immutable sequence of strings stored as UTF-8 bytes plus int64 end offsets.

    Example:
        >>> s = PackedStrings.from_iterable(["a dog", "", "ünï"])
        >>> len(s), s[0], s[2]
        (3, 'a dog', 'ünï')
    """

    __slots__ = ("_data", "_ends")

    def __init__(self, data: np.ndarray, ends: np.ndarray) -> None:
        self._data = data
        self._ends = ends

    @classmethod
    def from_iterable(cls, strings: Iterable[str]) -> PackedStrings:
        builder = StringsBuilder()
        for s in strings:
            builder.append(s)
        return builder.build()

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        if index < 0:
            index += len(self._ends)
        if not 0 <= index < len(self._ends):
            raise IndexError(f"index {index} out of range for {len(self._ends)} strings")
        start = int(self._ends[index - 1]) if index else 0
        return self._data[start : int(self._ends[index])].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._ends.nbytes)


class StringsBuilder:
    """Appends strings into growing byte and offset buffers (amortised O(1), no per-string objects kept)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")

    def append(self, s: str) -> None:
        self._data += s.encode("utf-8")
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def build(self) -> PackedStrings:
        # No copy: the arrays take over the buffers, and the builder starts afresh.
        data = np.frombuffer(self._data, dtype=np.uint8) if self._data else np.zeros(0, np.uint8)
        ends = np.frombuffer(self._ends, dtype=np.int64) if len(self._ends) else np.zeros(0, np.int64)
        self._data, self._ends = bytearray(), array("q")
        return PackedStrings(data, ends)
