"""The logger interface: a registry of loggers and what they are built from.

A logger is a class registered under a short name (``tensorboard``, ``wandb``), built from a
``LoggerContext``, with ``log(record)`` and ``close(failed)``. It names the packages it needs in
``requires`` and imports them only when built, so a config naming it loads where they are missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from clipbackdoor.errors import SetupError
from clipbackdoor.registry import Registry


class RecordLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...


class ExperimentLogger(RecordLogger, Protocol):
    #: True when this logger began a new log in a run that already has records (it was added when the run
    #: resumed): ``open_loggers`` replays the run's records to it, so its log holds the whole run.
    wants_history: bool

    def close(self, failed: bool) -> None: ...


@dataclass
class LoggerContext:
    """What a logger is built from."""

    run_dir: Path
    config: dict[str, Any]  # the run's resolved config
    # The step the run resumes from: records after it were dropped from metrics.jsonl and will be logged
    # again. None: a fresh run (metrics.jsonl was started anew).
    resume_step: int | None


LOGGERS: Registry[ExperimentLogger] = Registry("logger")


def require(module: str, extra: str) -> ModuleType:
    """Import a logger's package, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SetupError(
            f"train.report_to: {extra} needs the {module} package ({err}); pip install 'clipbackdoor[{extra}]'"
        ) from None


def numeric_fields(record: dict[str, Any]) -> dict[str, float]:
    """``{"<kind>/<field>": value}`` for the record's numbers (booleans and the step itself left out)."""
    kind = record.get("kind", "record")
    return {f"{kind}/{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
