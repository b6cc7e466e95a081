"""The accuracy-vs-ASR trade-off per (pre-training objective, cleaning method), from collected runs.

Two model-selection rules are applied to every group, side by side:

* the paper's **oracle** rule (system.md 2.4): over all runs and evaluated epochs, the best zero-shot
  accuracy among checkpoints with ASR <= a threshold. It uses test labels and the true trigger, which a
  defender does not have;
* a **defender** rule: the checkpoint with the lowest loss on held-out clean pairs (``val_loss``), which
  needs neither. Runs without a validation set leave it empty.

Every cleaned model is paired with its **un-poisoned control**: the same cleaning run (config identical but
for the checkpoint) applied to a model pre-trained the same way without poison. The control's accuracy
change at the same epoch is the cost of fine-tuning itself, which must not be mistaken for the cost of
removing the backdoor. Cleaning-run epoch 0 (the model before any update) is never a candidate.

Models of different architectures (``model.name`` of the pre-training) are never pooled either: each
architecture is a scale of its own, and a sweep over capacity gets one set of groups per architecture.

Runs whose cleaning data were themselves poisoned (system.md 4.2, "Poisoned cleaning data") form groups of
their own, one per number of poisons: they answer a different question and are never pooled with runs on a
clean cleaning set. Their controls are the same runs (same poisons) applied to the un-poisoned model.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from clipbackdoor.config import EXECUTION_KEYS
from clipbackdoor.reporting.collect import RunInfo
from clipbackdoor.reporting.frontier import argmin, best_at_threshold, pareto_front

THRESHOLDS = (0.01, 0.05, 0.10)
CONFIG_THRESHOLD = 0.10
# Keys that never change what a cleaning run computes, ignored when matching a run to its control.
_EXECUTION = EXECUTION_KEYS | {("train", "log_every"), ("init", "checkpoint")}


@dataclass
class Point:
    run: RunInfo
    epoch: int
    acc: float
    asr: float
    clean_target_rate: float
    val_loss: float


@dataclass
class Pick:
    """A selected checkpoint and what it cost."""

    point: Point
    delta: float  # accuracy change from the model it cleaned
    control_delta: float | None  # the un-poisoned control's accuracy change, same config and epoch


@dataclass
class ConfigResult:
    """One cleaning configuration (a run: its learning rate, epochs, ...) of one seed, on its own."""

    lr: float
    final_asr: float  # after the run's last evaluated epoch
    min_asr: float
    best: Pick | None  # best accuracy at ASR <= CONFIG_THRESHOLD over the run's epochs


@dataclass
class SeedResult:
    """One (pre-training objective, cleaning method, seed) cell."""

    objective: str
    method: str
    seed: int
    start: dict[str, Any] | None  # evaluation of the poisoned model before cleaning
    control_start: dict[str, Any] | None
    runs: int
    points: list[Point]
    best: dict[float, Pick | None]
    defender: Pick | None
    front: list[Point]
    min_asr: float
    # Per configuration, keyed by the run folder's own name (its settings in a sweep: "cleanclip_lr-0.001"),
    # which poisoned models, controls and seeds share.
    configs: dict[str, ConfigResult] = field(default_factory=dict)


@dataclass
class GroupSummary:
    """A cell aggregated over seeds: lists hold one value per seed."""

    objective: str
    method: str
    seeds: list[SeedResult] = field(default_factory=list)
    poisons: int = 0  # poisoned pairs in the cleaning data (0: a clean cleaning set)
    model: str = ""  # the pre-trained architecture (model.name)


def _config_key(run: RunInfo) -> str:
    def strip(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
        out = {}
        for k, v in node.items():
            path = (*prefix, k)
            if path in _EXECUTION:
                continue
            out[k] = strip(v, path) if isinstance(v, dict) else v
        return out

    return json.dumps(strip(run.config), sort_keys=True, default=str)


def _points(run: RunInfo) -> list[Point]:
    out = []
    for e in run.evals:
        if e.get("epoch", 0) < 1 or "asr_top1" not in e:
            continue
        out.append(Point(run, int(e["epoch"]), float(e["zeroshot_top1"]), float(e["asr_top1"]),
                         float(e.get("clean_target_rate", math.nan)), float(e.get("val_loss", math.nan))))
    return out


def _control_delta(point: Point, controls: dict[str, RunInfo]) -> float | None:
    control = controls.get(_config_key(point.run))
    if control is None or control.start is None:
        return None
    at = next((e for e in control.evals if e.get("epoch") == point.epoch), None)
    if at is None:
        return None
    return float(at["zeroshot_top1"]) - float(control.start["zeroshot_top1"])


def _pick(point: Point | None, start: dict[str, Any] | None, controls: dict[str, RunInfo]) -> Pick | None:
    if point is None:
        return None
    delta = point.acc - float(start["zeroshot_top1"]) if start else math.nan
    return Pick(point, delta, _control_delta(point, controls))


def analyse(runs: list[RunInfo]) -> list[GroupSummary]:
    """Group the cleaning runs of poisoned models by (architecture, pre-training objective, method, poisons in
    the cleaning data) and select models."""
    cleaning = [r for r in runs if r.kind == "clean" and r.source is not None]
    controls: dict[tuple, dict[str, RunInfo]] = {}
    for r in cleaning:
        if not r.poisoned:
            # The config key holds poison.budget, so a control matches only runs with as many cleaning poisons.
            controls.setdefault((r.model, r.root_objective, r.method, r.seed), {})[_config_key(r)] = r
    cells: dict[tuple, list[RunInfo]] = {}
    for r in cleaning:
        if r.poisoned:
            cells.setdefault((r.model, r.root_objective, r.method, r.cleaning_poisons, r.seed), []).append(r)
    groups: dict[tuple, GroupSummary] = {}
    for (model, objective, method, poisons, seed), members in sorted(cells.items(), key=lambda kv: _order(kv[0])):
        ctl = controls.get((model, objective, method, seed), {})
        start = members[0].start
        control_start = next(iter(ctl.values())).start if ctl else None
        by_run = {r.name: _points(r) for r in members}
        points = [p for r in members for p in by_run[r.name]]
        coords = [(p.asr, p.acc) for p in points]
        best = {}
        for t in THRESHOLDS:
            i = best_at_threshold(coords, t)
            best[t] = _pick(points[i] if i is not None else None, start, ctl)
        d = argmin([p.val_loss for p in points])
        result = SeedResult(
            objective, method, seed, start, control_start, len(members), points, best,
            _pick(points[d] if d is not None else None, start, ctl),
            [points[i] for i in pareto_front(coords)],
            min((p.asr for p in points), default=math.nan),
            {config_name(r): _config_result(r, by_run[r.name], start, ctl) for r in members},
        )
        groups.setdefault((model, objective, method, poisons),
                          GroupSummary(objective, method, poisons=poisons, model=model)).seeds.append(result)
    return list(groups.values())


def config_name(run: RunInfo) -> str:
    """A cleaning run's configuration as the sweep named its folder (the same for every source it cleans)."""
    return run.name.rsplit("/", 1)[-1]


def _config_result(run: RunInfo, points: list[Point], start: dict[str, Any] | None,
                   controls: dict[str, RunInfo]) -> ConfigResult:
    i = best_at_threshold([(p.asr, p.acc) for p in points], CONFIG_THRESHOLD)
    return ConfigResult(run.lr, points[-1].asr if points else math.nan, min((p.asr for p in points), default=math.nan),
                        _pick(points[i] if i is not None else None, start, controls))


_OBJECTIVE_ORDER = {"MMCL": 0, "MMCL+SSL": 1, "SSL": 2}
_METHOD_ORDER = {"cleanclip": 0, "mmcl": 1, "ssl": 2}


def _order(key: tuple) -> tuple:
    model, objective, method, *rest = key
    return (model, _OBJECTIVE_ORDER.get(objective, 9), objective, _METHOD_ORDER.get(method, 9), method or "", *rest)


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pretraining_runs(runs: list[RunInfo]) -> list[RunInfo]:
    return sorted((r for r in runs if r.kind == "pretrain"),
                  key=lambda r: (r.model, _OBJECTIVE_ORDER.get(r.objective, 9), not r.poisoned, r.seed, r.name))
