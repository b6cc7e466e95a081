"""Running a sweep (``experiments.spec`` reads and expands it): a local pool of worker processes, one run each.

Running a sweep again skips complete runs and resumes incomplete ones from their last checkpoint; the
training loop truncates metrics written after that checkpoint, so no evaluation is lost or counted twice.
Runs that build on a finished run go first, so results of whole lineages arrive early.

Each run executes in its own forked process (crash isolation and one core per run without paying the
4-second import of torch and open_clip again); the parent schedules, prints progress and rebuilds the
results index.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from clipbackdoor.io import atomic_write_text, scan_jsonl
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


@dataclass
class SweepResult:
    completed: list[str]
    failed: dict[str, str]  # name -> reason
    skipped: list[str]  # already complete before this invocation
    blocked: list[str]  # not run because a run they need failed

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


@contextlib.contextmanager
def _sweep_lock(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out_dir} is in use by another running sweep") from None
        yield


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    devices: list[str] | None = None,
    echo: Callable[[str], None] = print,
    poll_seconds: float = 0.5,
) -> SweepResult:
    """Run every incomplete run of ``spec`` under ``out_dir``; returns what happened.

    ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) runs one run at a time on each listed device (list a
    device twice to share it between two runs); it sets the number of workers. Safe to interrupt at any
    point and to call again: complete runs are skipped, the others resume.
    """
    out_dir = Path(out_dir)
    jobs = expand(spec)
    if devices:
        if workers and workers != len(devices):
            raise ConfigError(f"--workers {workers} and {len(devices)} --devices disagree; give one of them")
        workers = len(devices)
    workers = workers or spec.workers
    check_jobs(jobs, out_dir)
    with _sweep_lock(out_dir):
        atomic_write_text(out_dir / SPEC_COPY, yaml.safe_dump(spec.raw, sort_keys=False))
        return _Scheduler(jobs, out_dir, workers, spec.threads, echo, poll_seconds, devices).run()


class _Scheduler:
    def __init__(self, jobs, out_dir, workers, threads, echo, poll_seconds, devices=None) -> None:
        self.jobs, self.out_dir, self.workers, self.threads = jobs, out_dir, workers, threads
        # Devices not in use by a running job; None leaves every run on train.device.
        self.free_devices = list(devices) if devices else None
        self.echo, self.poll = echo, poll_seconds
        self.total = len(jobs)
        self.done_count = 0
        self.ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")

    def run(self) -> SweepResult:
        result = SweepResult([], {}, [], [])
        pending: list[Job] = []
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
        self.echo(f"sweep finished in {time.perf_counter() - start:.0f} s: {len(result.completed)} ran, "
                  f"{len(result.skipped)} were complete, {len(result.failed)} failed, {len(result.blocked)} blocked")
        return result

    def _start(self, job: Job) -> _Running:
        device = self.free_devices.pop(0) if self.free_devices is not None else None
        process = self.ctx.Process(target=run_job_in_child, args=(job, self.out_dir, self.threads, device),
                                   name=f"clipbackdoor:{job.name}", daemon=False)
        process.start()
        self.echo(f"          start   {job.name}" + (f" on {device}" if device else ""))
        return _Running(job, process, time.perf_counter(), device=device)

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
                self.echo(f"[{self.done_count:>3}/{self.total}] done    {name} in {seconds:.0f} s: "
                          f"{_fmt(final_metrics(run_dir))}")
            else:
                reason = last_error(run_dir / "log.txt") or f"exit status {r.process.exitcode}"
                result.failed[name] = reason
                self.echo(f"[{self.done_count:>3}/{self.total}] FAILED  {name}: {reason} (log: {run_dir / 'log.txt'})")

    def _report_progress(self, running: dict[str, _Running]) -> None:
        """Print each new evaluation of a running run, so a long pre-training shows its way."""
        for r in running.values():
            # Progress lines only: a damaged line is the run's to report, not a reason to stop the sweep.
            records = scan_jsonl(self.out_dir / r.job.name / "metrics.jsonl").records
            evals = [e for e in records if e.get("kind") == "eval"]
            for record in evals[r.seen_evals:]:
                if record.get("epoch", 0) > 0:
                    self.echo(f"          {r.job.name} epoch {record['epoch']}: {_fmt(record)}")
            r.seen_evals = max(r.seen_evals, len(evals))


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _fmt(metrics: dict[str, Any]) -> str:
    names = {"zeroshot_top1": "acc", "asr_top1": "ASR", "clean_target_rate": "clean->target", "val_loss": "val_loss"}
    return ", ".join(f"{short} {metrics[k]:.3f}" for k, short in names.items() if k in metrics)


# What callers of a sweep need, from one place: the spec (``experiments.spec``) and the checks (``.jobs``).
__all__ = ["Job", "SweepResult", "SweepSpec", "check_jobs", "expand", "job_config", "load_spec", "parse_spec",
           "run_sweep", "shipped_sweeps"]
