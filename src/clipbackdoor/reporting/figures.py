"""What the report's figures show, as the plain data ``reporting.plots`` draws."""

from __future__ import annotations

import math
from typing import Any

from clipbackdoor.reporting.analysis import GroupSummary, mean_std, pretraining_runs
from clipbackdoor.reporting.collect import RunInfo
from clipbackdoor.reporting.labels import VERDICT_THRESHOLD, method_key, method_text, run_settings


def panels(groups: list[GroupSummary], runs: list[RunInfo]) -> dict[str, dict[str, Any]]:
    panels: dict[str, dict[str, Any]] = {}
    for g in groups:
        panel = panels.setdefault(g.objective, {"start": None, "control_start": None, "methods": {}, "controls": {}})
        starts = [s.start for s in g.seeds if s.start]
        if starts:
            panel["start"] = (mean_std([s.get("asr_top1") for s in starts])[0],
                              mean_std([s.get("zeroshot_top1") for s in starts])[0])
        cstarts = [s.control_start for s in g.seeds if s.control_start]
        if cstarts:
            panel["control_start"] = (mean_std([s.get("asr_top1", math.nan) for s in cstarts])[0],
                                      mean_std([s.get("zeroshot_top1") for s in cstarts])[0])
        panel["methods"][method_key(g.method, g.poisons)] = [(p.asr, p.acc) for s in g.seeds for p in s.points]
    for r in runs:
        if r.kind == "clean" and not r.poisoned and r.root_objective in panels:
            panels[r.root_objective]["controls"].setdefault(method_key(r.method, r.cleaning_poisons), []).extend(
                (float(e["asr_top1"]), float(e["zeroshot_top1"])) for e in r.evals
                if e.get("epoch", 0) >= 1 and "asr_top1" in e)
    return panels


def trajectories(groups: list[GroupSummary], top: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Epoch trajectories of the ``top`` runs per pre-training objective, ranked by the oracle rule
    (best accuracy at ASR <= 10 %) over all their epochs, as the paper's trajectory plots do."""
    out: dict[str, list[dict[str, Any]]] = {}
    for objective in dict.fromkeys(g.objective for g in groups):
        ranked = []
        for g in (g for g in groups if g.objective == objective):
            for s in g.seeds:
                by_run: dict[str, list] = {}
                for p in s.points:
                    by_run.setdefault(p.run.name, []).append(p)
                for pts in by_run.values():
                    ok = [p.acc for p in pts if p.asr <= VERDICT_THRESHOLD]
                    if ok:
                        ranked.append((max(ok), pts[0].run, g))
        ranked.sort(key=lambda x: -x[0])
        out[objective] = [{
            "label": f"{method_text(g.method, g.poisons)}, {run_settings(run)}",
            "method": method_key(g.method, g.poisons),
            "points": [(int(e["epoch"]), float(e["asr_top1"]), float(e["zeroshot_top1"]))
                       for e in trajectory_evals(run)],
        } for _, run, g in ranked[:top]]
    return out


def trajectory_evals(run: RunInfo) -> list[dict[str, Any]]:
    start = run.start
    evals = [e for e in run.evals if e.get("epoch", 0) >= 1 and "asr_top1" in e]
    return ([{**start, "epoch": 0}] if start and "asr_top1" in start else []) + evals


def pretraining_curves(runs: list[RunInfo]) -> list[dict[str, Any]]:
    curves = []
    for r in pretraining_runs(runs):
        evals = [e for e in r.evals if "asr_top1" in e]
        curves.append({"label": f"{r.objective}{'' if r.poisoned else ' (control)'}, seed {r.seed}",
                       "epochs": [e["epoch"] for e in evals], "acc": [e["zeroshot_top1"] for e in evals],
                       "asr": [e["asr_top1"] for e in evals],
                       "clean_target_rate": [e.get("clean_target_rate", math.nan) for e in evals]})
    return curves


