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
(``pretrain/mmcl_poisoned_seed-0``, ``clean/mmcl_poisoned_seed-0/cleanclip_lr-0.001``); ``experiments.sweep``
runs them.

An optional ``slurm:`` section (top level, and per stage to override it) holds the resources of a run when
the sweep is submitted to a Slurm cluster (``experiments.slurm``); a local sweep ignores it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clipbackdoor.config import parse_yaml_mapping, read_text_file
from clipbackdoor.experiments.slurm_options import check_slurm_options
from clipbackdoor.registry import ConfigError

COMMANDS = ("pretrain", "clean")
STAGE_KEYS = {"command", "config", "set", "grid", "list", "from", "epoch", "slurm"}
SPEC_KEYS = {"stages", "workers", "threads", "description", "report", "slurm"}


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
    slurm: dict[str, Any] = field(default_factory=dict)  # this stage's checked ``slurm:`` keys


@dataclass
class SweepSpec:
    stages: list[Stage]
    workers: int = 1
    threads: int = 1
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)  # the sweep's checked ``slurm:`` keys


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
    slurm = check_slurm_options(data.get("slurm", {}), "sweep.slurm")
    return SweepSpec(stages, workers, threads, str(data.get("description", "")), data, slurm)


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
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(sorted(STAGE_KEYS))}")
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
        points, axes = grid_points(grid, f"{where}.grid"), [str(k) for k in grid]
    epoch = raw.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or epoch < 0):
        raise ConfigError(f"{where}.epoch: must be an epoch number >= 0, got {epoch!r}")
    slurm = check_slurm_options(raw.get("slurm", {}), f"{where}.slurm")
    return Stage(name, command, None if config is None else str(config), fixed, points, axes, source, epoch, slurm)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def grid_points(grid: dict[str, Any], where: str) -> list[tuple[list[str], dict[str, Any]]]:
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
