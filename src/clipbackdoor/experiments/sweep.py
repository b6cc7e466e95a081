"""Sweeps: grids or lists of runs over config keys, in stages, run by a local pool of worker processes.

A sweep spec (YAML) names stages in order. Each stage is one command (``pretrain`` or ``clean``), a base
config, fixed ``set`` overrides, and a ``grid`` (cross product of axes) or a ``list`` of override sets. A
``clean`` stage names the stage whose runs it cleans (``from``); it is crossed with every run of that stage.

    stages:
      pretrain:
        command: pretrain
        config: mmcl
        set: {train.epochs: 8}
        grid:
          objective:                      # a mapping axis: label -> value (values may be sections)
            mmcl: {clip_weight: 1.0, inmodal_weight: 0.0}
            mmcl-ssl: {clip_weight: 1.0, inmodal_weight: 1.0}
          poison.budget: {poisoned: 0.1, control: 0}
          seed: [0, 1, 2]                 # a list axis: named "seed-0", ...
      clean:
        command: clean
        from: pretrain
        grid:
          defense.name: [cleanclip, mmcl, ssl]
          train.lr: [1.0e-3, 3.0e-3]

Every run gets its own directory under the sweep directory, named from its axis values
(``pretrain/mmcl_poisoned_seed-0``, ``clean/mmcl_poisoned_seed-0/cleanclip_lr-0.001``). Running a sweep again
skips complete runs and resumes incomplete ones from their last checkpoint; the training loop truncates
metrics written after that checkpoint, so no evaluation is lost or counted twice.

Each run executes in its own forked process (crash isolation and one core per run without paying the
4-second import of torch and open_clip again); the parent schedules, prints progress and rebuilds the
results index.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clipbackdoor.config import parse_yaml_mapping, read_text_file
from clipbackdoor.io import atomic_write_text, scan_jsonl
from clipbackdoor.registry import ConfigError

COMMANDS = ("pretrain", "clean")
STAGE_KEYS = {"command", "config", "set", "grid", "list", "from", "epoch"}
SPEC_KEYS = {"stages", "workers", "threads", "description", "report"}
LOCK_NAME = ".sweep.lock"
SPEC_COPY = "sweep.yaml"


@dataclass
class Job:
    """One run of a sweep."""

    name: str  # the run directory, relative to the sweep directory
    stage: str
    command: str
    config: str | None
    overrides: list[str]
    params: dict[str, Any] = field(default_factory=dict)  # axis -> label, for people and the index
    source: str | None = None  # name of the job whose model this one cleans
    epoch: int | None = None  # clean that epoch of the source instead of its last


@dataclass
class Stage:
    name: str
    command: str
    config: str | None
    fixed: dict[str, Any]
    points: list[tuple[list[str], dict[str, Any]]]  # (name parts, flat overrides) per run
    axes: list[str] = field(default_factory=list)  # what each name part stands for
    source: str | None = None
    epoch: int | None = None


@dataclass
class SweepSpec:
    stages: list[Stage]
    workers: int = 1
    threads: int = 1
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


# -- spec -----------------------------------------------------------------------------------------------


def shipped_sweeps() -> list[str]:
    folder = resources.files("clipbackdoor") / "configs" / "sweeps"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_spec(path_or_name: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The spec as a dict and the folder its relative config paths are resolved against."""
    path = Path(path_or_name)
    if path.is_file():
        text, folder, origin = read_text_file(path), path.parent, str(path)
    else:
        shipped = resources.files("clipbackdoor") / "configs" / "sweeps" / f"{path_or_name}.yaml"
        if not shipped.is_file():
            raise ConfigError(f"sweep {str(path_or_name)!r} is neither a file nor a shipped sweep "
                              f"({', '.join(shipped_sweeps())})")
        text, folder, origin = shipped.read_text(), None, str(path_or_name)
    return parse_yaml_mapping(text, origin), folder


def load_spec(path_or_name: str | Path) -> SweepSpec:
    data, folder = read_spec(path_or_name)
    return parse_spec(data, folder)


def parse_spec(data: dict[str, Any], folder: Path | None = None) -> SweepSpec:
    unknown = set(data) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SPEC_KEYS))}")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise ConfigError("sweep: 'stages' must be a non-empty mapping of stage name -> stage")
    names = [str(n) for n in stages_raw]
    stages = _in_dependency_order([_parse_stage(str(name), raw, folder, names) for name, raw in stages_raw.items()])
    workers, threads = data.get("workers", 1), data.get("threads", 1)
    for key, value in (("workers", workers), ("threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"sweep.{key}: must be an integer >= 1, got {value!r}")
    return SweepSpec(stages, workers, threads, str(data.get("description", "")), data)


def _in_dependency_order(stages: list[Stage]) -> list[Stage]:
    """Stages in the written order, except that a stage always follows the one it cleans (YAML writers that
    sort keys put "clean" before "pretrain")."""
    ordered: list[Stage] = []
    waiting = list(stages)
    while waiting:
        ready = [s for s in waiting if s.source is None or s.source in {o.name for o in ordered}]
        if not ready:
            raise ConfigError(f"stages: circular 'from' links between {', '.join(s.name for s in waiting)}")
        ordered.append(ready[0])
        waiting.remove(ready[0])
    return ordered


def _parse_stage(name: str, raw: Any, folder: Path | None, earlier: list[str]) -> Stage:
    where = f"stages.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(raw) - STAGE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(STAGE_KEYS))}")
    command = raw.get("command")
    if command not in COMMANDS:
        raise ConfigError(f"{where}.command: must be one of {', '.join(COMMANDS)}, got {command!r}")
    source = raw.get("from")
    if command == "clean" and (source not in earlier or source == name):
        others = [n for n in earlier if n != name]
        raise ConfigError(f"{where}.from: must name another stage ({', '.join(others) or 'none'}), got {source!r}")
    if command == "pretrain" and source is not None:
        raise ConfigError(f"{where}.from: only clean stages start from another stage's models")
    config = raw.get("config")
    if config is not None and folder is not None and (folder / str(config)).is_file():
        config = str(folder / str(config))
    fixed = _flatten(_mapping(raw.get("set", {}), f"{where}.set"))
    if "grid" in raw and "list" in raw:
        raise ConfigError(f"{where}: give either 'grid' or 'list', not both")
    if "list" in raw:
        points, axes = _list_points(raw["list"], f"{where}.list"), ["run"]
    else:
        grid = _mapping(raw.get("grid", {}), f"{where}.grid")
        points, axes = _grid_points(grid, f"{where}.grid"), [str(k) for k in grid]
    epoch = raw.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or epoch < 0):
        raise ConfigError(f"{where}.epoch: must be an epoch number >= 0, got {epoch!r}")
    return Stage(name, command, None if config is None else str(config), fixed, points, axes, source, epoch)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _grid_points(grid: dict[str, Any], where: str) -> list[tuple[list[str], dict[str, Any]]]:
    axes = []
    for key, values in grid.items():
        if isinstance(values, dict):  # label -> value
            choices = [(str(label), value) for label, value in values.items()]
        elif isinstance(values, list):
            choices = [(_label(key, _number(v)), v) for v in values]
        else:
            raise ConfigError(f"{where}.{key}: expected a list of values or a mapping label -> value")
        if not choices:
            raise ConfigError(f"{where}.{key}: no values")
        axes.append([(label, _flatten({key: value})) for label, value in choices])
    points = []
    for combo in itertools.product(*axes):
        parts = [label for label, _ in combo]
        overrides: dict[str, Any] = {}
        for _, flat in combo:
            overrides.update(flat)
        points.append((parts, overrides))
    return points


def _list_points(items: Any, where: str) -> list[tuple[list[str], dict[str, Any]]]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected a non-empty list of override mappings")
    points = []
    for i, item in enumerate(items):
        item = dict(_mapping(item, f"{where}[{i}]"))
        label = item.pop("name", None)
        flat = _flatten(item)
        parts = [str(label)] if label is not None else [_label(k, v) for k, v in flat.items()] or [f"run{i}"]
        points.append((parts, flat))
    return points


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"objective": {"clip_weight": 1}}`` -> ``{"objective.clip_weight": 1}``: sections given as values
    merge into the config like dotted overrides (a changed ``name`` still replaces its section)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{full}."))
        else:
            out[full] = _number(value)
    return out


def _number(value: Any) -> Any:
    # YAML 1.1 reads "1e-3" as a string; everyone means the number.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            if any(c in value for c in ".eE") and value.lower() not in ("nan", "inf", "-inf"):
                return float(value)
    return value


def _label(key: str, value: Any) -> str:
    leaf = key.rsplit(".", 1)[-1]
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if leaf == "name" else f"{leaf}-{text}"


def expand(spec: SweepSpec) -> list[Job]:
    """Every run of the sweep, in stage order; clean stages crossed with their source stage's runs."""
    jobs: list[Job] = []
    by_stage: dict[str, list[Job]] = {}
    for stage in spec.stages:
        sources = by_stage[stage.source] if stage.source else [None]
        stage_jobs = []
        for src in sources:
            for parts, overrides in stage.points:
                leaf = "_".join(parts) or "run"
                prefix = f"{stage.name}/{src.name.split('/', 1)[1]}" if src else stage.name
                merged = {**stage.fixed, **overrides}
                stage_jobs.append(Job(
                    name=f"{prefix}/{leaf}", stage=stage.name, command=stage.command, config=stage.config,
                    overrides=[f"{k}={json.dumps(v)}" for k, v in merged.items()],
                    params=dict(zip(stage.axes, parts)) if stage.axes else {},
                    source=src.name if src else None, epoch=stage.epoch,
                ))
        names = [j.name for j in stage_jobs]
        if len(set(names)) != len(names):
            raise ConfigError(f"stages.{stage.name}: two runs would share a directory; give list entries a 'name'")
        by_stage[stage.name] = stage_jobs
        jobs += stage_jobs
    return jobs


# -- running --------------------------------------------------------------------------------------------


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
    from clipbackdoor.train.checkpoint import epoch_weights_name
    from clipbackdoor.train.run import RunDir, check_components

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


def _run_job_in_child(job: Job, out_dir: Path, threads: int, device: str | None = None) -> None:
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
        run_training(job_config(job, out_dir, threads, device), run_dir)
    except BaseException:
        traceback.print_exc(file=log_file)
        log_file.flush()
        os._exit(1)
    log_file.flush()
    os._exit(0)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the sweep process dies, even by SIGKILL, so a restarted sweep
    never races an orphaned worker over the same run directory."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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


def _is_complete(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


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
            if _is_complete(self.out_dir / job.name):
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
                    if job.source and not _is_complete(self.out_dir / job.source):
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
        process = self.ctx.Process(target=_run_job_in_child, args=(job, self.out_dir, self.threads, device),
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
            if r.process.exitcode == 0 and _is_complete(run_dir):
                result.completed.append(name)
                self.echo(f"[{self.done_count:>3}/{self.total}] done    {name} in {seconds:.0f} s: "
                          f"{_fmt(_final_metrics(run_dir))}")
            else:
                reason = _last_error(run_dir / "log.txt") or f"exit status {r.process.exitcode}"
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


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    """The final evaluation in a run's summary, for the progress line ({} if it cannot be read)."""
    from clipbackdoor.train.run import RunDir

    try:
        return RunDir(run_dir).summary()["final"]
    except ConfigError:
        return {}


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _fmt(metrics: dict[str, Any]) -> str:
    names = {"zeroshot_top1": "acc", "asr_top1": "ASR", "clean_target_rate": "clean->target", "val_loss": "val_loss"}
    return ", ".join(f"{short} {metrics[k]:.3f}" for k, short in names.items() if k in metrics)


def _last_error(log_path: Path) -> str | None:
    if not log_path.is_file():
        return None
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None
