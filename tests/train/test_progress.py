"""A run's progress: a bar with the time left on a terminal, plain log lines in a log file."""

import io
import logging

import pytest

from clipbackdoor.train.progress import RunProgress, _clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _walk(progress, epochs, steps, start=(0, 0)):
    for epoch in range(start[0], epochs):
        first = start[1] if epoch == start[0] else 0
        bar = progress.epoch(range(first, steps), epoch, first)
        for _ in bar:
            bar.note(loss="1.000")


def test_a_terminal_gets_a_bar_with_the_time_left_in_the_run(caplog):
    stream = Terminal()
    progress = RunProgress(steps_per_epoch=20, epochs=3, stream=stream, redraw_seconds=0)
    with caplog.at_level(logging.INFO, logger="clipbackdoor.train.progress"):
        _walk(progress, 3, 20)
    drawn = stream.getvalue()
    assert "\r" in drawn and "epoch 3/3" in drawn and "run left=" in drawn and "loss=1.000" in drawn
    assert not caplog.records  # the bar, not log lines too


def test_a_log_file_gets_plain_lines_not_a_bar(caplog):
    stream = io.StringIO()  # not a terminal: a log file, a pipe, a Slurm output file
    progress = RunProgress(steps_per_epoch=20, epochs=2, stream=stream, line_seconds=0)
    with caplog.at_level(logging.INFO, logger="clipbackdoor.train.progress"):
        _walk(progress, 2, 20)
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    # A line every tenth of an epoch (line_seconds 0), the last one of each epoch with its duration.
    assert len(lines) == 20
    assert lines[0].startswith("epoch 1/2: 2/20 steps (10%), loss 1.000, ") and lines[0].endswith(" in the run")
    assert lines[9].startswith("epoch 1/2: 20/20 steps (100%)") and ", took " in lines[9]
    assert "left in the epoch" in lines[10] and lines[19].startswith("epoch 2/2: 20/20 steps (100%)")


def test_plain_lines_wait_for_the_minute(caplog):
    progress = RunProgress(steps_per_epoch=20, epochs=1, stream=io.StringIO(), line_seconds=3600)
    with caplog.at_level(logging.INFO, logger="clipbackdoor.train.progress"):
        _walk(progress, 1, 20)
    assert [r.getMessage().split(":")[1].split(",")[0] for r in caplog.records] == [" 20/20 steps (100%)"]


def test_nothing_at_all_when_disabled(caplog):
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger="clipbackdoor.train.progress"):
        _walk(RunProgress(20, 2, enabled=False, stream=stream), 2, 20)
    assert stream.getvalue() == "" and not caplog.records


def test_time_left_counts_the_rest_of_the_epoch_and_the_epochs_after_it():
    progress = RunProgress(steps_per_epoch=10, epochs=4, stream=io.StringIO(), line_seconds=3600)
    # A resumed run: epoch 2 (0-based 1) from its batch 6.
    bar = progress.epoch(range(6, 10), 1, 6)
    assert bar.seconds_left() is None  # nothing timed yet
    iterator = iter(bar)
    next(iterator)
    next(iterator)
    per_step = progress.seconds_per_step()
    epoch_left, run_left = bar.seconds_left()
    # 7 of 10 steps done in epoch 2: 3 left in it, then 2 whole epochs.
    assert epoch_left == pytest.approx(3 * per_step) and run_left == pytest.approx(23 * per_step)


@pytest.mark.parametrize(("seconds", "text"), [(7, "0:07"), (249, "4:09"), (3909, "1:05:09")])
def test_clock(seconds, text):
    assert _clock(seconds) == text
