"""Weights & Biases: one wandb run per run directory, continued when the run resumes.

The wandb run's id is kept in ``<run>/wandb_run_id``, written before the first record, so a resumed run
(or a resumed ``wandb sync`` of an offline one) continues the same wandb run; wandb's files go to
``<run>/wandb/``. Settings are ``train.wandb``: project, entity, mode, name (default: the run directory's
name), group, tags.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from clipbackdoor.errors import SetupError
from clipbackdoor.io import atomic_write_text
from clipbackdoor.train.loggers.base import LOGGERS, LoggerContext, numeric_fields, require

ID_FILE = "wandb_run_id"


def _new_id() -> str:
    # wandb's own form: eight lowercase letters and digits.
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


@LOGGERS.register("wandb")
class WandbLogger:
    requires = ("wandb",)

    def __init__(self, context: LoggerContext) -> None:
        wandb = require("wandb", "wandb")
        settings = context.config["train"]["wandb"]
        id_file = context.run_dir / ID_FILE
        resumed = context.resume_step is not None and id_file.is_file()
        run_id = id_file.read_text().strip() if resumed else _new_id()
        if not resumed:
            # A fresh run (or one that starts logging to wandb only now) is a new wandb run: a stale id
            # would append this run's records to the history of one that never reached a checkpoint.
            atomic_write_text(id_file, run_id + "\n")
        self.wants_history = context.resume_step is not None and not resumed
        try:
            self.run = wandb.init(
                project=settings["project"], entity=settings["entity"], mode=settings["mode"],
                name=settings["name"] or context.run_dir.resolve().name, group=settings["group"],
                tags=settings["tags"] or None, dir=str(context.run_dir), id=run_id, resume="allow",
                # A resumed run may differ in execution settings (threads, device, loggers).
                config=context.config, allow_val_change=True,
            )
        except wandb.errors.Error as err:
            raise SetupError(
                f"train.report_to: wandb could not start a run ({' '.join(str(err).split())}); run 'wandb login', "
                "or set train.wandb.mode=offline"
            ) from None
        # Steps below this one are in wandb's history already, logged before the run was interrupted: the
        # resumed run logs them again (with the same values: training is deterministic), and wandb would
        # refuse each with a warning.
        self.first_step = self.run.step if resumed and settings["mode"] == "online" else 0

    def log(self, record: dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        if step >= self.first_step:
            self.run.log(numeric_fields(record), step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
