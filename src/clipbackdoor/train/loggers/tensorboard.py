"""TensorBoard: scalars in ``<run>/tensorboard/``, the run's config as text (``tensorboard --logdir <run>``)."""

from __future__ import annotations

from typing import Any

import yaml

from clipbackdoor.train.loggers.base import LOGGERS, LoggerContext, numeric_fields, require

LOG_DIR = "tensorboard"


@LOGGERS.register("tensorboard")
class TensorBoardLogger:
    requires = ("tensorboard",)

    def __init__(self, context: LoggerContext) -> None:
        # torch's writer imports tensorboard itself; importing it first turns its absence into the
        # one-line install hint instead of torch's message.
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        log_dir = context.run_dir / LOG_DIR
        had_events = log_dir.is_dir() and any(log_dir.glob("events.out.tfevents.*"))
        # A resumed run logs again every record after its checkpoint's step; the purge step makes
        # TensorBoard drop the points it already has from there on (and, for a fresh run, any left by a
        # start that never reached its first checkpoint), so no step is shown twice.
        purge_step = 0 if context.resume_step is None else context.resume_step + 1
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.wants_history = context.resume_step is not None and not had_events
        if context.resume_step is None or not had_events:
            config = yaml.safe_dump(context.config, sort_keys=False)
            # Indented four spaces: TensorBoard renders text as Markdown, and this keeps it a code block.
            self.writer.add_text("config", "".join("    " + line for line in config.splitlines(True)), 0)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in numeric_fields(record).items():
            self.writer.add_scalar(tag, value, step)
        if record.get("kind") == "eval":
            # Evaluations are few and are what one watches: visible now, not at the next periodic flush.
            self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()  # flushes
