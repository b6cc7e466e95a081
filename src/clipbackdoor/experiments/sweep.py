"""Running a sweep (``experiments.spec`` reads and expands it): a local pool of worker processes, one run each.

Running a sweep again skips complete runs and resumes incomplete ones from their last checkpoint; the
training loop truncates metrics written after that checkpoint, so no evaluation is lost or counted twice.
Runs that build on a finished run go first, so results of whole lineages arrive early.

Each run executes in its own forked process (crash isolation and one core per run without paying the
4-second import of torch and open_clip again); the parent schedules, prints progress and rebuilds the
results index.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clipbackdoor.experiments.jobs import (
    check_jobs,
    final_metrics,
    is_complete,
    job_config,
    last_error,
    run_job_in_child,
)
from clipbackdoor.experiments.spec import Job, SweepSpec, expand, load_spec, parse_spec, shipped_sweeps
from clipbackdoor.io import atomic_write_text, exclusive_lock, scan_jsonl
from clipbackdoor.registry import ConfigError

LOCK_NAME = ".sweep.lock"
SPEC_COPY = "sweep.yaml"


@dataclass
class _Running:
    job: Job
    process: Any
    started: float
    seen_evals: int = 0
    device: str | None = None
    last_eval: dict[str, Any] | None = None  # the newest evaluation, for the status line
    fresh: bool = True  # started from nothing (not resumed): its time is a whole run's

    @property
    def epochs_done(self) -> int:
        return int(self.last_eval.get("epoch", 0)) if self.last_eval else 0


@dataclass
class SweepResult:
    completed: list[str]
    failed: dict[str, str]  # name -> reason
    skipped: list[str]  # already complete before this invocation
    blocked: list[str]  # not run because a run they need failed

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def _sweep_lock(out_dir: Path):
    return exclusive_lock(out_dir / LOCK_NAME, f"{out_dir} is in use by another running sweep")


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    devices: list[str] | None = None,
    echo: Callable[[str], None] = print,
    poll_seconds: float = 0.5,
    status_seconds: float = 60.0,
) -> SweepResult:
    """Run every incomplete run of ``spec`` under ``out_dir``; returns what happened.

    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) runs one run at a time on each listed device (list a
    device twice to share it between two runs); it sets the number of workers. Safe to interrupt at any
    point and to call again: complete runs are skipped, the others resume.

    Progress goes to ``echo``: a line per run started and finished, each finish followed by a status line
    (runs done, running, waiting, and the time left, estimated from the runs finished so far); while runs
    train, a status line with each running run's epoch at most every ``status_seconds``.
    """
    out_dir = Path(out_dir)
    jobs = expand(spec)
    if devices:
        if workers and workers != len(devices):
            raise ConfigError(f"--workers {workers} and {len(devices)} --devices disagree; give one of them")
        workers = len(devices)
    workers = workers or spec.workers
    epochs = {name: cfg.train.epochs for name, cfg in check_jobs(jobs, out_dir).items()}
    with _sweep_lock(out_dir):
        atomic_write_text(out_dir / SPEC_COPY, yaml.safe_dump(spec.raw, sort_keys=False))
        return _Scheduler(jobs, out_dir, workers, spec.threads, echo, poll_seconds, devices, epochs,
                          status_seconds).run()


class _Scheduler:
    def __init__(self, jobs, out_dir, workers, threads, echo, poll_seconds, devices=None, epochs=None,
                 status_seconds=60.0) -> None:
        self.jobs, self.out_dir, self.workers, self.threads = jobs, out_dir, workers, threads
        # Devices not in use by a running job; None leaves every run on train.device.
        self.free_devices = list(devices) if devices else None
        self.echo, self.poll = echo, poll_seconds
        self.total = len(jobs)
        self.done_count = 0
        self.ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        self.epochs = epochs or {}
        self.eta = _Estimate(workers)
        self.pending: list[Job] = []
        self.status_seconds, self.last_status = status_seconds, time.perf_counter()
        self.new_evals = self.finished_since_status = False

    def run(self) -> SweepResult:
        result = SweepResult([], {}, [], [])
        pending = self.pending
        for job in self.jobs:
            if is_complete(self.out_dir / job.name):
                result.skipped.append(job.name)
            else:
                pending.append(job)
        self.done_count = len(result.skipped)
        self.echo(f"sweep {self.out_dir}: {self.total} runs, {len(result.skipped)} already complete, "
                  f"{len(pending)} to run on {self.workers} worker(s)")
        running: dict[str, _Running] = {}
        start = time.perf_counter()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while pending or running:
                self._reap(running, result)
                # Jobs that build on a finished run go before fresh ones (stable otherwise): results of a
                # whole lineage (a seed's pre-training and its cleaning) arrive early, and a sweep stopped
                # half-way leaves whole lineages rather than many pre-trainings and no cleaning.
                for job in sorted(pending, key=lambda j: j.source is None):
                    if len(running) >= self.workers:
                        break
                    if job.source and (job.source in result.failed or job.source in result.blocked):
                        pending.remove(job)
                        result.blocked.append(job.name)
                        self.done_count += 1
                        self.echo(f"[{self.done_count:>3}/{self.total}] blocked {job.name}: {job.source} failed")
                        continue
                    if job.source and not is_complete(self.out_dir / job.source):
                        continue
                    pending.remove(job)
                    running[job.name] = self._start(job)
                self._report_progress(running)
                # After runs finish (and others took their place), and while runs train at most every
                # status_seconds when they have evaluated since the last status.
                due = self.new_evals and time.perf_counter() - self.last_status >= self.status_seconds
                if (running or pending) and (self.finished_since_status or due):
                    self._status(running)
                if running:
                    time.sleep(self.poll)
        except KeyboardInterrupt:
            for r in running.values():
                r.process.terminate()
            for r in running.values():
                r.process.join(10)
            self.echo(f"sweep interrupted; {len(running)} run(s) stopped, run the same command again to resume")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.echo(f"sweep finished in {_duration(time.perf_counter() - start)}: {len(result.completed)} ran, "
                  f"{len(result.skipped)} were complete, {len(result.failed)} failed, {len(result.blocked)} blocked")
        return result

    def _start(self, job: Job) -> _Running:
        device = self.free_devices.pop(0) if self.free_devices is not None else None
        process = self.ctx.Process(target=run_job_in_child, args=(job, self.out_dir, self.threads, device),
                                   name=f"clipbackdoor:{job.name}", daemon=False)
        process.start()
        self.echo(f"          start   {job.name}" + (f" on {device}" if device else ""))
        fresh = not (self.out_dir / job.name / "metrics.jsonl").exists()
        return _Running(job, process, time.perf_counter(), device=device, fresh=fresh)

    def _reap(self, running: dict[str, _Running], result: SweepResult) -> None:
        for name, r in list(running.items()):
            if r.process.is_alive():
                continue
            r.process.join()
            del running[name]
            if r.device is not None:
                self.free_devices.append(r.device)
            self.done_count += 1
            seconds = time.perf_counter() - r.started
            run_dir = self.out_dir / name
            if r.process.exitcode == 0 and is_complete(run_dir):
                result.completed.append(name)
                # A resumed run's time covers only what was left of it: no guide to a whole run's length.
                if r.fresh:
                    self.eta.finished(r.job.stage, seconds)
                self.echo(f"[{self.done_count:>3}/{self.total}] done    {name} in {_duration(seconds)}: "
                          f"{_fmt(final_metrics(run_dir))}")
            else:
                reason = last_error(run_dir / "log.txt") or f"exit status {r.process.exitcode}"
                result.failed[name] = reason
                self.echo(f"[{self.done_count:>3}/{self.total}] FAILED  {name}: {reason} (log: {run_dir / 'log.txt'})")
            self.finished_since_status = True

    def _report_progress(self, running: dict[str, _Running]) -> None:
        """Note each new evaluation of a running run, for the next status line."""
        for r in running.values():
            # Progress only: a damaged line is the run's to report, not a reason to stop the sweep.
            records = scan_jsonl(self.out_dir / r.job.name / "metrics.jsonl").records
            evals = [e for e in records if e.get("kind") == "eval"]
            if len(evals) > r.seen_evals:
                r.last_eval, r.seen_evals, self.new_evals = evals[-1], len(evals), True

    def _status(self, running: dict[str, _Running]) -> None:
        """Runs done, running and waiting, and the estimated time left; then each running run that has
        finished an epoch, at that epoch with its latest numbers."""
        now = time.perf_counter()
        self.last_status, self.new_evals, self.finished_since_status = now, False, False
        left, untimed = self.eta.seconds_left(
            [(r.job.stage, now - r.started, r.epochs_done, self.epochs.get(r.job.name, 0)) for r in running.values()],
            [job.stage for job in self.pending])
        if not untimed:
            eta = f"about {_duration(left)} left"
        elif left:
            eta = f"more than {_duration(left)} left ({untimed} run(s) of stages not timed yet)"
        else:
            eta = "time left known once a run has finished an epoch"
        self.echo(f"          status: {self.done_count}/{self.total} done, {len(running)} running, "
                  f"{len(self.pending)} waiting; {eta}")
        for r in running.values():
            if r.epochs_done:
                self.echo(f"            {r.job.name} epoch {r.epochs_done}/{self.epochs.get(r.job.name, '?')}: "
                          f"{_fmt(r.last_eval)}")


class _Estimate:
    """Time left in a sweep, from how long its runs take.

    A running run that has finished some epochs projects its own length (its time per epoch so far); a
    waiting run is expected to take as long as the finished runs of its stage took on average, or as long
    as a running run of its stage projects. The work left is shared by the workers. Only a guide: it knows
    nothing of a stage that waits for another, and nothing of a stage none of whose runs has an epoch yet.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.took: dict[str, list[float]] = {}

    def finished(self, stage: str, seconds: float) -> None:
        self.took.setdefault(stage, []).append(seconds)

    def seconds_left(self, running: list[tuple[str, float, int, int]], waiting: list[str]) -> tuple[float, int]:
        """``running``: (stage, seconds so far, epochs done, epochs) per running run; ``waiting``: the stage
        of each waiting run. Returns the seconds left for the runs that can be timed, and how many cannot."""
        typical = {stage: sum(t) / len(t) for stage, t in self.took.items()}
        for stage, elapsed, done, epochs in running:
            if done > 0 and epochs > 0:
                typical.setdefault(stage, elapsed / done * epochs)
        left, untimed = [], 0
        for stage, elapsed, done, epochs in running:
            if done > 0 and epochs > 0:
                left.append(max(elapsed / done * epochs - elapsed, 0.0))
            elif stage in typical:
                left.append(max(typical[stage] - elapsed, 0.0))
            else:
                untimed += 1
        for stage in waiting:
            if stage in typical:
                left.append(typical[stage])
            else:
                untimed += 1
        # Never less than the longest single run still to go: workers share runs, not a run's epochs.
        return max(sum(left) / self.workers, max(left, default=0.0)), untimed


def _duration(seconds: float) -> str:
    """45 s, 12 min, 3 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _fmt(metrics: dict[str, Any]) -> str:
    names = {"zeroshot_top1": "acc", "asr_top1": "ASR", "clean_target_rate": "clean->target", "val_loss": "val_loss"}
    return ", ".join(f"{short} {metrics[k]:.3f}" for k, short in names.items() if k in metrics)


# What callers of a sweep need, from one place: the spec (``experiments.spec``) and the checks (``.jobs``).
__all__ = ["Job", "SweepResult", "SweepSpec", "check_jobs", "expand", "job_config", "load_spec", "parse_spec",
           "run_sweep", "shipped_sweeps"]
