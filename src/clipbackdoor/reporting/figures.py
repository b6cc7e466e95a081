"""What the report's figures show, as the plain data ``reporting.plots`` draws, and the figures themselves.

Every method and objective is named here by the same functions as in the tables (``labels.method_text``,
``RunInfo.objective``), so a legend can never call a method what no table calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from clipbackdoor.reporting import plots
from clipbackdoor.reporting.analysis import GroupSummary, mean_std, pretraining_runs
from clipbackdoor.reporting.chance import chance_accuracy
from clipbackdoor.reporting.collect import RunInfo
from clipbackdoor.reporting.labels import VERDICT_THRESHOLD, method_key, method_text, run_settings


@dataclass
class ReportFigure:
    name: str  # the PNG's file name in plots/, without extension
    title: str  # the figure's heading on the page
    caption: str  # how to read it
    figure: Figure


def report_figures(groups: list[GroupSummary], runs: list[RunInfo]) -> list[ReportFigure]:
    """The report's four figures, in page order, with captions that say how to read them."""
    chance = chance_accuracy(runs)
    cleaning = panels(groups, runs)
    # One colour per method for all figures, so that a method keeps its colour from one figure to the next.
    colors = plots.method_colors({s["method"] for p in cleaning.values() for s in [*p["methods"], *p["controls"]]})
    encoding = ("Colour: cleaning method; marker shape: learning rate; marker size: cleaning epoch (larger is "
                "later). The red star is the poisoned model before cleaning, the grey star its un-poisoned control; "
                f"the green band is ASR ≤ {plots.LOW_ASR_BAND:.0f}%, where the backdoor counts as removed")
    line = (f"; the dashed line is {plots.chance_label(chance)}." if chance is not None else
            ". No chance-accuracy line: the evaluation set's classes could not be read here.")
    return [
        ReportFigure("tradeoff", "Accuracy against ASR: every cleaning run, every epoch",
                     "Accuracy vs ASR of every evaluated epoch of every cleaning run (the paper's main "
                     f"figure). {encoding}; hollow markers are the un-poisoned control cleaned the same way{line}",
                     plots.tradeoff_figure(cleaning, chance=chance, colors=colors)),
        ReportFigure("pareto", "Pareto fronts",
                     "Pareto fronts (lower ASR and higher accuracy are better): the best accuracy each "
                     f"method reached at or below each ASR. {encoding}; dashed fronts with hollow markers are the "
                     f"un-poisoned controls{line}", plots.pareto_figure(cleaning, chance=chance, colors=colors)),
        ReportFigure("trajectories", "Epoch trajectories of the best runs",
                     f"The best runs per pre-training objective by the oracle rule (best accuracy at ASR ≤ "
                     f"{VERDICT_THRESHOLD:.0%}; where fewer got there, those with the lowest ASR), epoch by epoch: "
                     "each run starts at the poisoned model (the star, epoch 0) and each arrow leads to the next "
                     "cleaning epoch, whose marker is larger and numbered where there is room. Colour: cleaning "
                     f"method; line style: learning rate{line}",
                     plots.trajectory_figure(trajectories(groups), chance=chance, colors=colors)),
        ReportFigure("pretraining", "Pre-training curves",
                     "Accuracy and ASR over pre-training epochs: a poisoned run solid, its un-poisoned "
                     "control dashed in the same colour; dotted: clean images classified as the target (the "
                     "floor an ASR is read against)", plots.pretraining_figure(pretraining_curves(runs))),
    ]


def panels(groups: list[GroupSummary], runs: list[RunInfo]) -> dict[str, plots.Panel]:
    """Per pre-training objective: the poisoned model and its control before cleaning, and every evaluated
    cleaning epoch of each method, applied to the poisoned model and to the control."""
    out: dict[str, plots.Panel] = {}
    for g in groups:
        panel = out.setdefault(g.objective, {"start": None, "control_start": None, "methods": [], "controls": []})
        starts = [s.start for s in g.seeds if s.start]
        if starts:
            panel["start"] = (mean_std([s.get("asr_top1") for s in starts])[0],
                              mean_std([s.get("zeroshot_top1") for s in starts])[0])
        cstarts = [s.control_start for s in g.seeds if s.control_start]
        if cstarts:
            panel["control_start"] = (mean_std([s.get("asr_top1", math.nan) for s in cstarts])[0],
                                      mean_std([s.get("zeroshot_top1") for s in cstarts])[0])
        panel["methods"].append({"label": method_text(g.method, g.poisons), "method": method_key(g.method, g.poisons),
                                 "points": [plots.Cleaned(p.asr, p.acc, p.run.lr, p.epoch)
                                            for s in g.seeds for p in s.points]})
    controls: dict[tuple[str, str, int], list[plots.Cleaned]] = {}
    for r in runs:
        if r.kind == "clean" and not r.poisoned and r.root_objective in out:
            controls.setdefault((r.root_objective, r.method, r.cleaning_poisons), []).extend(
                plots.Cleaned(float(e["asr_top1"]), float(e["zeroshot_top1"]), r.lr, int(e["epoch"]))
                for e in r.evals if e.get("epoch", 0) >= 1 and "asr_top1" in e)
    for (objective, method, poisons), points in controls.items():
        out[objective]["controls"].append({"label": method_text(method, poisons),
                                           "method": method_key(method, poisons), "points": points})
    return out


def trajectories(groups: list[GroupSummary], top: int = 3) -> dict[str, list[plots.Trajectory]]:
    """Epoch trajectories of the ``top`` runs per pre-training objective, ranked by the oracle rule (best
    accuracy at ASR <= 10 %) over all their epochs, as the paper's trajectory plots do. Where fewer than
    ``top`` runs got there, the runs that came closest (lowest ASR) follow: an objective nothing cleaned is
    the one whose trajectories a reader most wants to see."""
    out: dict[str, list[plots.Trajectory]] = {}
    for objective in dict.fromkeys(g.objective for g in groups):
        ranked = []
        for g in (g for g in groups if g.objective == objective):
            for s in g.seeds:
                by_run: dict[str, list] = {}
                for p in s.points:
                    by_run.setdefault(p.run.name, []).append(p)
                for pts in by_run.values():
                    ok = [p.acc for p in pts if p.asr <= VERDICT_THRESHOLD]
                    # Runs under the bound first, by best accuracy there; then the others, by lowest ASR.
                    key = (0, -max(ok)) if ok else (1, min(p.asr for p in pts))
                    ranked.append((key, pts[0].run, g))
        ranked.sort(key=lambda x: x[0])
        out[objective] = [{
            "label": f"{method_text(g.method, g.poisons)}, {run_settings(run)}",
            "method": method_key(g.method, g.poisons),
            "lr": run.lr,
            "points": [(int(e["epoch"]), float(e["asr_top1"]), float(e["zeroshot_top1"]))
                       for e in trajectory_evals(run)],
        } for _, run, g in ranked[:top]]
    return out


def trajectory_evals(run: RunInfo) -> list[dict[str, Any]]:
    start = run.start
    evals = [e for e in run.evals if e.get("epoch", 0) >= 1 and "asr_top1" in e]
    return ([{**start, "epoch": 0}] if start and "asr_top1" in start else []) + evals


def pretraining_curves(runs: list[RunInfo]) -> list[plots.Curve]:
    """Each pre-training run's evaluations, named by its objective as the pre-training table names it."""
    curves: list[plots.Curve] = []
    for r in pretraining_runs(runs):
        evals = [e for e in r.evals if "asr_top1" in e]
        curves.append({"label": r.objective, "control": not r.poisoned, "seed": r.seed,
                       "epochs": [e["epoch"] for e in evals], "acc": [e["zeroshot_top1"] for e in evals],
                       "asr": [e["asr_top1"] for e in evals],
                       "clean_target_rate": [e.get("clean_target_rate", math.nan) for e in evals]})
    return curves
