"""Atomic file writes and JSON-lines metric files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clipbackdoor.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); give it the permissions an ordinary write would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


@dataclass
class JsonlScan:
    """What a JSON-lines file holds: its records, the numbers (1-based) of complete lines that are not JSON
    objects, and a torn tail: the bytes after the last newline when they are not a whole record, as an
    interrupted write (power loss, a full disk) leaves them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)
    torn_tail: bytes = b""


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def scan_jsonl(path: str | Path) -> JsonlScan:
    """Read every line of a JSON-lines file without raising on damage (see ``JsonlScan``)."""
    path = Path(path)
    scan = JsonlScan()
    if not path.exists():
        return scan
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            scan.bad_lines.append(number)
        else:
            scan.records.append(record)
    if tail.strip():
        record = _record(tail)
        if record is None:
            scan.torn_tail = tail
        else:  # a whole record that only lacks its newline
            scan.records.append(record)
    return scan


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (a crash mid-write) is left out, not fatal.

    Raises:
        DataError: a complete line is not a JSON object (the file was damaged or edited); names the line.
    """
    scan = scan_jsonl(path)
    if scan.bad_lines:
        raise DataError(unreadable_lines_message(path, scan.bad_lines))
    return scan.records


def unreadable_lines_message(path: str | Path, bad_lines: list[int]) -> str:
    more = f" (and {len(bad_lines) - 1} more)" if len(bad_lines) > 1 else ""
    return f"{path}: line {bad_lines[0]}{more} is not a JSON record; the file was damaged or edited"


def drop_torn_tail(path: str | Path) -> int:
    """End the file after its last complete line: cut a torn tail, or end a whole last record with its
    newline. Returns the number of bytes cut (logged as a warning), so the next append starts a line."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if not size:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Only the tail is read: metrics files of long runs hold tens of thousands of lines.
        start = size
        while start > 0:
            step = min(start, 1 << 16)
            f.seek(start - step)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        f.seek(start)
        tail = f.read()
        if _record(tail) is not None:
            f.write(b"\n")
            return 0
        f.truncate(start)
    log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write", path, len(tail))
    return len(tail)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


class JsonlLogger:
    """Appends one JSON object per line to ``metrics.jsonl`` and flushes, so readers see every record."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A record appended to a torn line would merge with it into one unreadable line.
        drop_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str, *, without_locks: Callable[[], None] | None = None):
    """Hold an exclusive ``flock`` on ``path`` (created) for the ``with`` block, or raise ConfigError(``busy``)
    when another process holds it. The kernel drops the lock when its process dies, so a killed holder never
    leaves it behind.

    Some cluster file systems (Lustre mounted without ``-o flock``) refuse locks altogether: with
    ``without_locks`` the block runs unguarded after calling it (to say so); without, the OSError stands.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        except OSError as err:
            unsupported = err.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)
            if without_locks is None or not unsupported:
                raise
            without_locks()
        yield
