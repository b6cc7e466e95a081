"""Experiment loggers: every ``metrics.jsonl`` record also goes to TensorBoard or Weights & Biases.

``train.report_to`` names them (``base.LOGGERS``; one file each). ``open_loggers`` returns the fan-out
the training loop writes to: it appends each record to ``metrics.jsonl`` first, the run's own record, and
then forwards it. Every numeric field of a record becomes a scalar ``<kind>/<field>`` (``eval/asr_top1``,
``train/loss``) at the record's ``step``; other fields (names, the data record's skip counts) stay in
``metrics.jsonl``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from clipbackdoor.errors import ConfigError, did_you_mean
from clipbackdoor.io import JsonlLogger, read_jsonl
from clipbackdoor.train.loggers import tensorboard, wandb  # noqa: F401  (registration)
from clipbackdoor.train.loggers.base import (
    LOGGERS,
    ExperimentLogger,
    LoggerContext,
    RecordLogger,
    numeric_fields,
    require,
)

__all__ = ["LOGGERS", "ExperimentLogger", "LoggerContext", "MetricsLogger", "RecordLogger", "check_installed",
           "check_names", "numeric_fields", "open_loggers", "require"]


def check_names(names: list[str]) -> None:
    """Every name in ``train.report_to`` a registered logger (one-line ConfigError with a suggestion)."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(
                f"train.report_to: unknown logger {name!r}{did_you_mean(name, LOGGERS.names())}; "
                f"choose from: {', '.join(LOGGERS.names())}"
            )


def check_installed(names: list[str]) -> None:
    """Fail before any work when a named logger's package is missing (SetupError naming the extra)."""
    for name in names:
        for module in LOGGERS.get(name).requires:
            require(module, name)


class MetricsLogger:
    """``metrics.jsonl`` plus the experiment loggers; closes every one on exit, marking a run that raised."""

    def __init__(self, jsonl: JsonlLogger, loggers: list[ExperimentLogger]) -> None:
        self.jsonl, self.loggers = jsonl, loggers

    def log(self, record: dict[str, Any]) -> None:
        self.jsonl.log(record)
        for logger in self.loggers:
            logger.log(record)

    def close(self, failed: bool = False) -> None:
        # Every logger is closed even when one fails to, so no writer is left unflushed.
        errors: list[Exception] = []
        for close in [self.jsonl.close, *(functools.partial(lg.close, failed) for lg in self.loggers)]:
            try:
                close()
            except Exception as err:
                errors.append(err)
        if errors:
            raise errors[0]

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)


def open_loggers(run_dir: Path, metrics: Path, config: dict[str, Any], names: list[str],
                 resume_step: int | None) -> MetricsLogger:
    """The fan-out for a run: ``metrics.jsonl`` and each logger in ``names`` (repeats ignored)."""
    out = MetricsLogger(JsonlLogger(metrics), [])
    context = LoggerContext(run_dir=Path(run_dir), config=config, resume_step=resume_step)
    try:
        for name in dict.fromkeys(names):
            logger = LOGGERS.get(name)(context)
            out.loggers.append(logger)
            if logger.wants_history:
                for record in read_jsonl(metrics):
                    logger.log(record)
    except BaseException:
        out.close(failed=True)
        raise
    return out
