"""Progress of one training run: a bar with the time left on a terminal, plain log lines elsewhere.

A bar redrawn with carriage returns is what a person at a terminal wants, and what ruins a log file or a
Slurm output file (one "line" of thousands of redraws). So the bar is drawn only when the stream is a
terminal; otherwise a plain line goes to the log every tenth of an epoch or every minute, whichever comes
later, with the same numbers. Both give the time left in the epoch and in the run.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class RunProgress:
    """Progress over a run's optimizer steps, shown epoch by epoch.

    Args:
        steps_per_epoch: batches in an epoch.
        epochs: epochs in the run.
        enabled: false shows nothing (``train.progress``; other ranks than 0, sweep workers).
        stream: where a bar would be drawn; a bar only if it is a terminal.
        line_seconds: at least this long between two plain lines.
        redraw_seconds: at least this long between two redraws of the bar.
    """

    def __init__(self, steps_per_epoch: int, epochs: int, enabled: bool = True, stream: TextIO | None = None,
                 line_seconds: float = 60.0, redraw_seconds: float = 0.1) -> None:
        self.steps_per_epoch, self.epochs, self.enabled = steps_per_epoch, epochs, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.line_seconds, self.redraw_seconds = line_seconds, redraw_seconds
        self.interactive = enabled and _is_terminal(self.stream)
        # Seconds per step, measured in this process only: a resumed run times itself afresh.
        self._timed_steps, self._timed_seconds = 0, 0.0

    def epoch(self, batches: Iterable[Any], epoch: int, start_batch: int) -> EpochProgress:
        """Wrap one epoch's batches (``epoch`` counts from 0; ``start_batch`` where a resumed epoch starts)."""
        return EpochProgress(self, batches, epoch, start_batch)

    def seconds_per_step(self) -> float | None:
        return self._timed_seconds / self._timed_steps if self._timed_steps else None

    def _timed(self, steps: int, seconds: float) -> None:
        self._timed_steps += steps
        self._timed_seconds += seconds


class EpochProgress:
    """Iterates over one epoch's batches and shows where it stands; ``note(...)`` adds the latest loss."""

    def __init__(self, run: RunProgress, batches: Iterable[Any], epoch: int, start_batch: int) -> None:
        self.run, self.epoch, self.done = run, epoch, start_batch
        self.batches = batches
        self.postfix: dict[str, str] = {}
        self.bar = None
        if run.interactive:
            self.bar = tqdm(total=run.steps_per_epoch, initial=start_batch, desc=self._title(), leave=False,
                            dynamic_ncols=True, file=run.stream,
                            mininterval=run.redraw_seconds)
        self.every = max(run.steps_per_epoch // 10, 1)
        self.started = self.last_line = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        tick = time.perf_counter()
        for batch in self.batches:
            yield batch
            now = time.perf_counter()
            self.run._timed(1, now - tick)
            tick = now
            self.done += 1
            self._show(now)
        self.close()

    def note(self, **values: str) -> None:
        self.postfix.update(values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def seconds_left(self) -> tuple[float, float] | None:
        """(epoch, run) seconds left at the speed measured so far; None before the first step."""
        per_step = self.run.seconds_per_step()
        if per_step is None:
            return None
        in_epoch = self.run.steps_per_epoch - self.done
        later = (self.run.epochs - self.epoch - 1) * self.run.steps_per_epoch
        return in_epoch * per_step, (in_epoch + later) * per_step

    def _title(self) -> str:
        return f"epoch {self.epoch + 1}/{self.run.epochs}"

    def _show(self, now: float) -> None:
        if not self.run.enabled:
            return
        left = self.seconds_left()
        if self.bar is not None:
            # tqdm shows the epoch's own time left; the run's is what a person waiting wants to know.
            extra = {"run left": _clock(left[1])} if left else {}
            self.bar.set_postfix({**self.postfix, **extra}, refresh=False)
            self.bar.update(1)
            return
        end = self.done == self.run.steps_per_epoch
        if end or (self.done % self.every == 0 and now - self.last_line >= self.run.line_seconds):
            self.last_line = now
            numbers = "".join(f", {k} {v}" for k, v in self.postfix.items())
            if end:
                times = f", took {_clock(now - self.started)}"
                times += f", {_clock(left[1])} left in the run" if left else ""
            else:
                times = f", {_clock(left[0])} left in the epoch, {_clock(left[1])} in the run" if left else ""
            log.info("%s: %d/%d steps (%d%%)%s%s", self._title(), self.done, self.run.steps_per_epoch,
                     100 * self.done // self.run.steps_per_epoch, numbers, times)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _clock(seconds: float) -> str:
    """1:05:09, 4:09, 0:07: how long, as a clock reads."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
