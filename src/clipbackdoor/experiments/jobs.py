"""A sweep's runs as worker processes: each run's resolved config, the check of every run before any starts,
and the body of the forked process that runs one (everything it prints goes to the run's ``log.txt``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from clipbackdoor.experiments.spec import Job
from clipbackdoor.io import exclusive_lock
from clipbackdoor.registry import ConfigError

RUN_LOCK = ".lock"
log = logging.getLogger(__name__)


def job_config(job: Job, out_dir: Path, threads: int, device: str | None = None):
    """The resolved config of ``job`` (its source run must exist for a clean job); ``device`` pins it to
    one device (an execution setting: a run resumed on another GPU is the same run)."""
    from clipbackdoor.experiments.stages import clean_config, pretrain_config

    overrides = [*job.overrides, f"train.threads={threads}", "train.progress=false"]
    if device:
        overrides.append(f"train.device={device}")
    if job.command == "pretrain":
        return pretrain_config(job.config, overrides)
    return clean_config(out_dir / job.source, job.config, overrides, epoch=job.epoch)


def check_jobs(jobs: list[Job], out_dir: str | Path) -> dict[str, Any]:
    """Resolve every run's config and check its component sections before any run starts, so a typo in a
    grid or ``set`` key stops the sweep at once, naming the run and the key, instead of failing every run.

    A cleaning run is checked against the config its source run will have (the source need not exist).
    A run already complete in ``out_dir`` must have been made with its job's config: a sweep spec edited
    since would otherwise skip it and report a stale result as the new one.

    Returns:
        ``{run name: resolved ExperimentConfig}``.
    """
    from clipbackdoor.experiments.stages import clean_config_from
    from clipbackdoor.rundir import RunDir, epoch_weights_name
    from clipbackdoor.train.run import check_components

    out_dir = Path(out_dir)
    resolved: dict[str, Any] = {}
    for job in jobs:
        try:
            if job.command == "pretrain":
                cfg = job_config(job, out_dir, threads=1)
            else:
                upstream = resolved[job.source].to_dict()
                ckpt = out_dir / job.source
                if job.epoch is not None:
                    ckpt = ckpt / "checkpoints" / epoch_weights_name(job.epoch)
                cfg = clean_config_from(upstream, ckpt, job.config, job.overrides)
            check_components(cfg)
            run = RunDir(out_dir / job.name)
            # The checkpoint path is where the source was found (a moved or re-spelled --out is the same run).
            stale = run.config_differences(cfg, ignore=(("init", "checkpoint"),)) if run.is_complete() else []
        except ConfigError as err:
            raise ConfigError(f"sweep run {job.name}: {err}") from None
        if stale:
            raise ConfigError(
                f"sweep run {job.name} is complete but was made with another config ({'; '.join(stale[:3])}); "
                "the spec changed since: use another --out, or delete that run directory to run it again"
            )
        resolved[job.name] = cfg
    return resolved


def run_job_in_child(job: Job, out_dir: Path, threads: int, device: str | None = None) -> None:
    """Body of a worker process: everything it prints goes to the run's ``log.txt``."""
    _die_with_parent()
    run_dir = out_dir / job.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(run_dir / "log.txt", "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    sys.stdout = sys.stderr = log_file
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    from clipbackdoor.train.loop import run_training

    try:
        with run_lock(run_dir):
            run_training(job_config(job, out_dir, threads, device), run_dir)
    except BaseException:
        traceback.print_exc(file=log_file)
        log_file.flush()
        os._exit(1)
    log_file.flush()
    os._exit(0)


def run_lock(run_dir: Path):
    """Hold ``<run>/.lock`` while a process trains the run: a local sweep, the Slurm array tasks of two
    overlapping submissions or a hand-typed ``--run`` must never write one run directory at once. (The sweep
    directory's own lock cannot do this: the array tasks of a Slurm sweep run side by side.) On a file system
    that refuses locks the run is still worth training, unguarded, and the log says so."""
    def unguarded() -> None:
        log.warning("%s: the file system does not support locks; nothing stops a second process from "
                    "training this run at the same time", run_dir)

    return exclusive_lock(run_dir / RUN_LOCK, f"{run_dir} is being trained by another process, which holds "
                                              f"{run_dir / RUN_LOCK}", without_locks=unguarded)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the sweep process dies, even by SIGKILL, so a restarted sweep
    never races an orphaned worker over the same run directory."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def is_complete(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """The final evaluation in a run's summary, for the progress line ({} if it cannot be read)."""
    from clipbackdoor.rundir import RunDir

    try:
        return RunDir(run_dir).summary()["final"]
    except ConfigError:
        return {}


def last_error(log_path: Path) -> str | None:
    if not log_path.is_file():
        return None
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None
