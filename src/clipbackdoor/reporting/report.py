"""``write_report(runs_dir)``: tables, plots, a verdict and one HTML page, from run directories only.

Outputs (in ``out``, default ``runs_dir``):

* ``results.csv``: the results index, one row per evaluation of every run;
* ``summary.csv`` and ``summary.md``: per (pre-training objective, cleaning method, poisons in the cleaning
  data[, seed]) the poisoned model's accuracy and ASR, the best accuracy at ASR <= 1/5/10 % with the run and
  epoch that gave it, the un-poisoned control's fine-tuning cost, the defender's pick, and the number of
  configurations;
* ``pareto.csv``: the Pareto front (ASR, accuracy) of every group;
* ``plots/``: the accuracy-vs-ASR scatter (the paper's main figure), Pareto fronts, trajectories of the
  best runs, and pre-training curves;
* ``report.html``: all of the above on one self-contained page, with a plain-words verdict and the trigger
  gallery of each attack (``trigger_gallery.png`` of the pre-training runs).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipbackdoor.io import atomic_write_text
from clipbackdoor.reporting import html, plots
from clipbackdoor.reporting.analysis import (
    THRESHOLDS,
    GroupSummary,
    Pick,
    SeedResult,
    analyse,
    mean_std,
    pretraining_runs,
)
from clipbackdoor.reporting.collect import GALLERY_NAME, RunInfo, collect_runs, write_index
from clipbackdoor.reporting.headline import (
    GAP,
    LEARNED_ASR,
    MARK,
    asr_decay,
    decay_text,
    headline_targets,
    targets_markdown,
)
from clipbackdoor.reporting.scale import parameters_text, scale_points, scale_table, scale_verdict, scales

# Cleaning counts as successful at this ASR; at the demo's scale the clean false-positive floor for the
# target class is a few percent, so 10 % (not the paper's 5 %) is the criterion the verdict uses.
VERDICT_THRESHOLD = 0.10
# A gap in best accuracy smaller than this many points (or than the seed spread) is not called a difference.
MEANINGFUL_GAP = 0.02
SCALES_DIR = "scales"  # several architectures: one whole report each, in SCALES_DIR/<model>/
METHOD_LABELS = {"cleanclip": "CleanCLIP (MMCL+SSL)", "mmcl": "MMCL only", "ssl": "SSL only"}


def method_key(method: str, poisons: int) -> str:
    """A cleaning method as figures name it; a poisoned cleaning set makes it a method of its own."""
    return method if not poisons else f"{method} + {poisons} poison{'s' if poisons != 1 else ''}"


def method_text(method: str, poisons: int = 0) -> str:
    """A cleaning method as tables name it, with the number of poisons in its cleaning data if any."""
    label = METHOD_LABELS.get(method, method)
    return label if not poisons else f"{label}, {poisons} poison{'s' if poisons != 1 else ''} in cleaning data"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def signed(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{100 * value:+.1f}"


def pm(values: list[float | None], fmt=pct) -> str:
    """``mean ± sd`` over seeds (just the value for one seed)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "–"
    mean, sd = mean_std(finite)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {100 * sd:.1f}"


def _hp(run: RunInfo) -> str:
    parts = [f"lr {run.lr:g}"]
    parts += [f"{k.rsplit('.', 1)[-1]} {v}" for k, v in run.params.items()
              if k not in ("train.lr", "seed", "defense.name", "poison.budget") and not k.startswith("objective.")]
    return ", ".join(parts)


def _pick_text(pick: Pick | None, detail: bool) -> str:
    if pick is None:
        return "not reached"
    p = pick.point
    text = f"{pct(p.acc)} (ASR {pct(p.asr)})"
    return f"{text}, {_hp(p.run)}, ep {p.epoch}" if detail else text


@dataclass
class Report:
    out: Path
    html_path: Path
    summary_md: str
    headline: str
    verdict: str
    groups: list[GroupSummary]
    # Run directories and metric lines that could not be read and were left out (also logged as warnings).
    problems: list[str] = field(default_factory=list)


# -- tables -------------------------------------------------------------------------------------------


SUMMARY_HEADERS = ["pre-training", "cleaning", "seeds", "configs", "poisoned acc", "poisoned ASR",
                   "clean→target", *[f"best acc @ASR≤{int(t * 100)}%" for t in THRESHOLDS],
                   "Δacc @≤10%", "control Δacc (fine-tuning cost)", "defender pick (min val loss)", "min ASR"]


def _group_row(g: GroupSummary) -> list[str]:
    seeds = g.seeds
    detail = len(seeds) == 1
    starts = [s.start or {} for s in seeds]
    row = [g.objective, method_text(g.method, g.poisons), str(len(seeds)),
           str(sum(s.runs for s in seeds) // len(seeds)),
           pm([st.get("zeroshot_top1") for st in starts]), pm([st.get("asr_top1") for st in starts]),
           pm([st.get("clean_target_rate") for st in starts])]
    for t in THRESHOLDS:
        picks = [s.best[t] for s in seeds]
        if detail:
            row.append(_pick_text(picks[0], True))
        else:
            reached = [p for p in picks if p is not None]
            row.append(f"{pm([p.point.acc for p in reached])} ({len(reached)}/{len(seeds)} seeds)"
                       if reached else "not reached")
    picks = [s.best[VERDICT_THRESHOLD] for s in seeds]
    row.append(pm([p.delta for p in picks if p], signed) if any(picks) else "–")
    row.append(pm([p.control_delta for p in picks if p and p.control_delta is not None], signed))
    defenders = [s.defender for s in seeds if s.defender]
    if detail:
        row.append(_pick_text(defenders[0], True) if defenders else "no val_loss")
    else:
        row.append(f"{pm([d.point.acc for d in defenders])} / ASR {pm([d.point.asr for d in defenders])}"
                   if defenders else "no val_loss")
    row.append(pm([s.min_asr for s in seeds]))
    return row


def summary_table(groups: list[GroupSummary]) -> tuple[list[str], list[list[str]]]:
    return SUMMARY_HEADERS, [_group_row(g) for g in groups]


def summary_csv_rows(groups: list[GroupSummary]) -> list[dict[str, Any]]:
    """Machine-readable: one row per seed, fractions, with the run and epoch of every pick."""
    rows = []
    for g in groups:
        for s in g.seeds:
            st = s.start or {}
            row: dict[str, Any] = {"model": g.model, "pretrain_objective": g.objective, "method": g.method,
                                   "cleaning_poisons": g.poisons, "seed": s.seed,
                                   "configs": s.runs, "evaluations": len(s.points),
                                   "poisoned_acc": st.get("zeroshot_top1"), "poisoned_asr": st.get("asr_top1"),
                                   "poisoned_clean_target_rate": st.get("clean_target_rate"),
                                   "control_start_acc": (s.control_start or {}).get("zeroshot_top1"),
                                   "min_asr": s.min_asr}
            for t, pick in [*s.best.items(), ("defender", s.defender)]:
                tag = f"asr{int(t * 100)}" if t != "defender" else "defender"
                p = pick.point if pick else None
                row.update({f"{tag}_acc": p.acc if p else None, f"{tag}_asr": p.asr if p else None,
                            f"{tag}_delta": pick.delta if pick else None,
                            f"{tag}_control_delta": pick.control_delta if pick else None,
                            f"{tag}_run": p.run.name if p else None, f"{tag}_epoch": p.epoch if p else None})
            rows.append(row)
    return rows


def pretraining_table(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "objective", "poisoned", "seed", "epochs", "acc", "ASR", "clean→target", "peak ASR (epoch)"]
    rows = []
    for r in pretraining_runs(runs):
        last = r.evals[-1] if r.evals else {}
        peak = max(r.evals, key=lambda e: e.get("asr_top1", -1), default={})
        rows.append([r.name, r.objective, "yes" if r.poisoned else "no (control)", str(r.seed),
                     str(last.get("epoch", "–")), pct(last.get("zeroshot_top1")), pct(last.get("asr_top1")),
                     pct(last.get("clean_target_rate")),
                     f"{pct(peak.get('asr_top1'))} ({peak.get('epoch', '–')})"])
    return headers, rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


# -- verdict ------------------------------------------------------------------------------------------


def verdict(groups: list[GroupSummary]) -> str:
    """The paper's question in plain words: does CleanCLIP remove the backdoor from each pre-training
    objective, and at what accuracy cost compared with the control?"""
    clean = {g.objective: g for g in groups if g.method == "cleanclip" and not g.poisons}
    poisoned_data = _poisoned_cleaning_text(groups)
    if not clean:
        if poisoned_data:
            return ("No CleanCLIP cleaning runs of poisoned models on clean cleaning data were found, so there is "
                    f"no verdict.\n\n{poisoned_data}")
        return "No CleanCLIP cleaning runs of poisoned models were found, so there is no verdict."
    lines, best = [], {}
    pct_t = int(VERDICT_THRESHOLD * 100)
    for objective, g in clean.items():
        n = len(g.seeds)
        start_acc, _ = mean_std([(s.start or {}).get("zeroshot_top1") for s in g.seeds])
        start_asr, _ = mean_std([(s.start or {}).get("asr_top1") for s in g.seeds])
        floor, _ = mean_std([(s.start or {}).get("clean_target_rate") for s in g.seeds])
        picks = [s.best[VERDICT_THRESHOLD] for s in g.seeds]
        reached = [p for p in picks if p]
        seeds_txt = f" (mean over {n} seeds)" if n > 1 else ""
        text = (f"{objective} pre-training{seeds_txt}: the poisoned model has {pct(start_acc)}% accuracy and "
                f"{pct(start_asr)}% ASR (the clean false-positive rate for the target is {pct(floor)}%). ")
        if start_asr < 0.5:
            text += "It learned the backdoor only weakly, so cleaning it says little. "
        if not reached:
            low, _ = mean_std([s.min_asr for s in g.seeds])
            text += f"CleanCLIP never brought ASR to {pct_t}% or below (lowest {pct(low)}%)."
        else:
            d, dsd = mean_std([p.delta for p in reached])
            acc, _ = mean_std([p.point.acc for p in reached])
            best[objective] = (acc, d, dsd, len(reached), n)
            text += (f"CleanCLIP reached ASR ≤ {pct_t}% in {len(reached)} of {n} seed(s); the best such "
                     f"checkpoint has {pct(acc)}% accuracy ({signed(d)} points)")
            ctl = [p.control_delta for p in reached if p.control_delta is not None]
            if ctl:
                c, _ = mean_std(ctl)
                text += (f", while the same fine-tuning of an un-poisoned model changed accuracy by {signed(c)} "
                         "points, so most of that change is the cost of fine-tuning, not of removing the backdoor"
                         if abs(c) >= abs(d) / 2 else
                         f", against {signed(c)} points for the same fine-tuning of an un-poisoned model")
            text += "."
        lines.append(text)
    lines.append(_comparison(clean, best))
    decay = decay_text(asr_decay(groups))
    if decay:
        lines.append(decay)
    targets = headline_targets(groups)
    if not all(t.met for t in targets):
        lines.append("The paper's headline, as three targets, is not met here (" + "; ".join(
            f"{t.key}: {MARK[t.met]}" for t in targets) + "). For where it starts with model size, see "
            "`clipbackdoor demo --preset headline` and docs/demo.md.")
    if poisoned_data:
        lines.append(poisoned_data)
    lines.append("Selection above uses the paper's oracle rule (test accuracy and the true trigger); the "
                 "defender's rule (lowest held-out clean loss) is in the table beside it.")
    return "\n\n".join(lines)


def _poisoned_cleaning_text(groups: list[GroupSummary]) -> str:
    """What poisons in the cleaning data did to CleanCLIP (system.md 4.2), per pre-training objective; empty
    when no cleaning set was poisoned."""
    by_objective: dict[str, dict[int, GroupSummary]] = {}
    for g in groups:
        if g.method == "cleanclip":
            by_objective.setdefault(g.objective, {})[g.poisons] = g
    lines = []
    pct_t = int(VERDICT_THRESHOLD * 100)
    for objective, by_k in by_objective.items():
        if not any(by_k):
            continue
        ks = sorted(by_k)
        low = [f"{pct(mean_std([s.min_asr for s in by_k[k].seeds])[0])}%" for k in ks]
        best = []
        for k in ks:
            reached = [p for p in (s.best[VERDICT_THRESHOLD] for s in by_k[k].seeds) if p]
            best.append(f"{pct(mean_std([p.point.acc for p in reached])[0])}%" if reached else "not reached")
        lines.append(f"Poisoned cleaning data, {objective} pre-training: with {' / '.join(map(str, ks))} poisons "
                     f"in the cleaning data, CleanCLIP's lowest ASR was {' / '.join(low)} and its best accuracy "
                     f"at ASR ≤ {pct_t}% {' / '.join(best)}.")
    return " ".join(lines)


def _comparison(clean: dict[str, GroupSummary], best: dict[str, tuple]) -> str:
    """MMCL against MMCL+SSL. Accuracy costs are compared only when both were cleaned in every seed; a
    difference in how often cleaning succeeded is reported as such, and a weakly learned backdoor is named
    as the confound it is."""
    if "MMCL" not in clean or "MMCL+SSL" not in clean:
        return "Only one pre-training objective was cleaned, so the two cannot be compared."
    weak = [o for o in ("MMCL", "MMCL+SSL")
            if mean_std([(s.start or {}).get("asr_top1") for s in clean[o].seeds])[0] < 0.5]
    caveat = (f" But the {' and '.join(weak)} model{'s' if len(weak) > 1 else ''} learned the backdoor only "
              "weakly, so this comparison is confounded and does not test the paper's claim."
              if weak else "")
    n = {o: len(clean[o].seeds) for o in ("MMCL", "MMCL+SSL")}
    hit = {o: best[o][3] if o in best else 0 for o in ("MMCL", "MMCL+SSL")}
    pct_t = int(VERDICT_THRESHOLD * 100)
    if hit["MMCL"] != n["MMCL"] or hit["MMCL+SSL"] != n["MMCL+SSL"]:
        text = (f"CleanCLIP reached ASR ≤ {pct_t}% in {hit['MMCL']} of {n['MMCL']} seed(s) for MMCL "
                f"pre-training and in {hit['MMCL+SSL']} of {n['MMCL+SSL']} for MMCL+SSL pre-training, so the "
                "accuracy costs are not compared.")
        if hit["MMCL"] / n["MMCL"] > hit["MMCL+SSL"] / n["MMCL+SSL"]:
            text += " The MMCL+SSL model was the harder one to clean, the paper's direction."
        return text + caveat
    _, d1, s1, _, _ = best["MMCL"]
    _, d2, s2, _, _ = best["MMCL+SSL"]
    gap, noise = d1 - d2, max(MEANINGFUL_GAP, s1 + s2)
    if gap > noise:
        text = (f"Cleaning cost the MMCL+SSL model {100 * gap:.1f} points more accuracy than the MMCL model at "
                "the same ASR bound: the paper's effect appears here.")
    elif gap < -noise:
        text = (f"Cleaning cost the MMCL+SSL model {100 * -gap:.1f} points less than the MMCL model: the "
                "opposite of the paper's effect.")
    else:
        text = (f"The accuracy cost differs by {100 * gap:+.1f} points between the two objectives, within the "
                f"noise ({100 * noise:.1f} points): the paper's effect does not clearly appear at this scale.")
    return text + caveat


# -- plots --------------------------------------------------------------------------------------------


def _panels(groups: list[GroupSummary], runs: list[RunInfo]) -> dict[str, dict[str, Any]]:
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


def _trajectories(groups: list[GroupSummary], top: int = 3) -> dict[str, list[dict[str, Any]]]:
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
            "label": f"{method_text(g.method, g.poisons)}, {_hp(run)}", "method": method_key(g.method, g.poisons),
            "points": [(int(e["epoch"]), float(e["asr_top1"]), float(e["zeroshot_top1"]))
                       for e in _trajectory_evals(run)],
        } for _, run, g in ranked[:top]]
    return out


def _trajectory_evals(run: RunInfo) -> list[dict[str, Any]]:
    start = run.start
    evals = [e for e in run.evals if e.get("epoch", 0) >= 1 and "asr_top1" in e]
    return ([{**start, "epoch": 0}] if start and "asr_top1" in start else []) + evals


def _pretraining_curves(runs: list[RunInfo]) -> list[dict[str, Any]]:
    curves = []
    for r in pretraining_runs(runs):
        evals = [e for e in r.evals if "asr_top1" in e]
        curves.append({"label": f"{r.objective}{'' if r.poisoned else ' (control)'}, seed {r.seed}",
                       "epochs": [e["epoch"] for e in evals], "acc": [e["zeroshot_top1"] for e in evals],
                       "asr": [e["asr_top1"] for e in evals],
                       "clean_target_rate": [e.get("clean_target_rate", math.nan) for e in evals]})
    return curves


# -- the report ---------------------------------------------------------------------------------------


def write_report(runs_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Report:
    """The report of every run under ``runs_dir``, written to ``out`` (default: ``runs_dir``).

    Runs of several architectures (a sweep over ``model.name``) are never pooled: each gets a whole report of
    its own in ``out/scales/<model>/``, and the page in ``out`` shows the headline's effect against scale.
    """
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir
    problems: list[str] = []
    runs = collect_runs(runs_dir, problems)
    if not runs:
        from clipbackdoor.registry import ConfigError

        raise ConfigError(f"{runs_dir}: no run directories (config.yaml + metrics.jsonl) found")
    out.mkdir(parents=True, exist_ok=True)
    write_index(out, runs)
    title = title or f"clipbackdoor report: {runs_dir.name}"
    models = scales(runs)
    if len(models) <= 1:
        return _write_page(runs, runs_dir, out, title, problems)
    per_scale = {m: _write_page([r for r in runs if r.model == m], runs_dir, out / SCALES_DIR / m, f"{title}: {m}",
                                problems) for m in models}
    return _write_scale_page(runs, runs_dir, out, title, problems, per_scale)


def _write_page(runs: list[RunInfo], runs_dir: Path, out: Path, title: str, problems: list[str]) -> Report:
    """Tables, plots, verdict and page for runs of one architecture."""
    out.mkdir(parents=True, exist_ok=True)
    groups = analyse(runs)

    headers, rows = summary_table(groups)
    summary_md = html.markdown_table(headers, rows)
    p_headers, p_rows = pretraining_table(runs)
    pre_md = html.markdown_table(p_headers, p_rows)
    targets = headline_targets(groups)
    atomic_write_text(out / "summary.md", f"## Cleaning\n\n{summary_md}\n\n## Pre-training\n\n{pre_md}\n\n"
                                          f"## The paper's headline\n\n{targets_markdown(targets)}\n")
    atomic_write_text(out / "summary.csv", _csv_text(summary_csv_rows(groups)))
    atomic_write_text(out / "pareto.csv", _csv_text([
        {"model": g.model, "pretrain_objective": g.objective, "method": g.method, "cleaning_poisons": g.poisons,
         "seed": s.seed, "asr": p.asr, "acc": p.acc, "run": p.run.name, "epoch": p.epoch}
        for g in groups for s in g.seeds for p in s.front]))

    panels = _panels(groups, runs)
    plot_dir = out / "plots"
    images = [
        ("Accuracy vs ASR of every evaluated epoch of every cleaning run (the paper's main figure); the red star "
         "is the poisoned model, hollow markers are un-poisoned controls cleaned the same way",
         plots.scatter_panels(panels, plot_dir / "tradeoff.png")),
        ("Pareto fronts (lower ASR, higher accuracy is better)", plots.pareto_panels(panels, plot_dir / "pareto.png")),
        ("Epoch trajectories of the best runs (oracle rule, ASR ≤ 10%)",
         plots.trajectory_panels(_trajectories(groups), plot_dir / "trajectories.png")),
        ("Accuracy and ASR over pre-training epochs (dashed: clean false-positive rate for the target)",
         plots.pretraining_curves(_pretraining_curves(runs), plot_dir / "pretraining.png")),
    ]
    text = verdict(groups)
    headline = _headline(groups)
    sections: list[dict[str, Any]] = [
        {"kind": "table", "caption": "Cleaning: accuracy and ASR (%) per pre-training objective and cleaning "
         "method", "headers": headers, "rows": rows,
         "note": "best acc @ASR≤x: oracle rule (max test accuracy over all runs and epochs with ASR ≤ x). "
                 "Δacc: change from the poisoned model. control Δacc: the same cleaning run applied to an "
                 "un-poisoned model, at the same epoch. defender pick: the checkpoint with the lowest loss on "
                 "held-out clean pairs (no trigger, no test labels)."},
        *({"kind": "image", "caption": c, "path": p} for c, p in images[:3]),
        {"kind": "table", "caption": "Pre-training", "headers": p_headers, "rows": p_rows},
        {"kind": "table", "caption": "The paper's headline, as targets (costs net of the un-poisoned controls)",
         "headers": ["target", "", "measured"],
         "rows": [[t.description, MARK[t.met], t.detail] for t in targets]},
        {"kind": "image", "caption": images[3][0], "path": images[3][1]},
    ]
    galleries = _trigger_galleries(runs)
    if galleries:
        sections.append({"kind": "images", "caption": "Triggers", "images": galleries,
                         "note": "Top row: training images as they are; bottom row: the same images poisoned, "
                                 "as training saw them (each attack's trigger_gallery.png)."})
    config_text = _config_text(runs_dir, runs)
    page = html.render_html(
        title=title, verdict=text, sections=sections,
        config_text=config_text,
        generated=f"generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(runs)} run "
                  f"directories under {runs_dir}" + "".join(f"; {p}" for p in problems),
    )
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    return Report(out, html_path, summary_md, headline, text, groups, problems)


def _write_scale_page(runs: list[RunInfo], runs_dir: Path, out: Path, title: str, problems: list[str],
                      per_scale: dict[str, Report]) -> Report:
    """The page over several architectures: the effect against scale, then each architecture's headline
    targets and cleaning table, each linking to its own whole report."""
    groups = [g for r in per_scale.values() for g in r.groups]
    points = scale_points(groups, runs)
    headers, rows = scale_table(points)
    series = [{"label": f"{p.model}\n{parameters_text(p.parameters)}",
               "x": float(p.parameters) if all(q.parameters for q in points) else float(i),
               "start_asr": {o: [v for v in vs if v is not None] for o, vs in p.start_asr.items()},
               "gaps": p.gaps} for i, p in enumerate(points)]
    image = plots.scale_curve(series, out / "plots" / "scale.png", learned=LEARNED_ASR, gap=GAP)
    parts = [f"## The headline against scale\n\n{html.markdown_table(headers, rows)}\n"]
    sections: list[dict[str, Any]] = [
        {"kind": "image", "path": image,
         "caption": "The headline against model size: the backdoor each objective learned (left) and how much more "
                    "accuracy cleaning MMCL+SSL models to ASR ≤ 10% costs than MMCL models, net of controls (right)"},
        {"kind": "table", "caption": "The headline per architecture (accuracy and ASR in %, drops in points, net of "
         "the un-poisoned controls; one value per seed)", "headers": headers, "rows": rows}]
    for model, report in per_scale.items():
        parts.append(f"## {model}\n\n{report.summary_md}\n")
        targets = next(p.targets for p in points if p.model == model)
        sections.append({"kind": "table", "caption": f"{model}: the paper's headline, as targets",
                         "headers": ["target", "", "measured"],
                         "rows": [[t.description, MARK[t.met], t.detail] for t in targets],
                         "note": f"The whole report of this architecture: {report.html_path.relative_to(out)}"})
    atomic_write_text(out / "summary.md", "\n".join(parts))
    atomic_write_text(out / "summary.csv", _csv_text(summary_csv_rows(groups)))
    text = scale_verdict(points)
    page = html.render_html(
        title=title, verdict=text, sections=sections, config_text=_config_text(runs_dir, runs),
        generated=f"generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(runs)} run "
                  f"directories under {runs_dir}" + "".join(f"; {p}" for p in dict.fromkeys(problems)),
    )
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    headline = "\n\n".join([_text_table(headers, rows),
                             *(f"{model}:\n{r.headline}" for model, r in per_scale.items())])
    return Report(out, html_path, "\n".join(parts), headline, text, groups, list(dict.fromkeys(problems)))


def _trigger_galleries(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """One trigger gallery per distinct attack, from the poisoned pre-training runs that wrote one."""
    seen, out = set(), []
    for r in pretraining_runs(runs):
        path = r.path / GALLERY_NAME
        attack = r.config.get("attack") or {}
        key = json.dumps(attack, sort_keys=True, default=str)
        if r.poisoned and key not in seen and path.is_file():
            seen.add(key)
            out.append({"caption": f"{attack.get('name', 'attack')} (from {r.name})", "path": path})
    return out


def _headline(groups: list[GroupSummary]) -> str:
    """The short table a terminal shows: one line per group."""
    headers = ["pre-training", "cleaning", "poisoned acc/ASR", "best acc @ASR≤10%", "Δacc", "control Δacc"]
    rows = []
    for g in groups:
        starts = [s.start or {} for s in g.seeds]
        picks = [s.best[VERDICT_THRESHOLD] for s in g.seeds]
        reached = [p for p in picks if p]
        rows.append([g.objective, method_text(g.method, g.poisons),
                     f"{pm([s.get('zeroshot_top1') for s in starts])} / {pm([s.get('asr_top1') for s in starts])}",
                     pm([p.point.acc for p in reached]) if reached else "not reached",
                     pm([p.delta for p in reached], signed) if reached else "–",
                     pm([p.control_delta for p in reached if p.control_delta is not None], signed)])
    return _text_table(headers, rows)


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns aligned for a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in rows)])


def _config_text(runs_dir: Path, runs: list[RunInfo]) -> str:
    spec = runs_dir / "sweep.yaml"
    if spec.is_file():
        return spec.read_text()
    pre = pretraining_runs(runs)
    chosen = pre[0] if pre else runs[0]
    return f"# {chosen.name}/config.yaml\n" + yaml.safe_dump(chosen.config, sort_keys=False)


__all__ = ["Report", "SeedResult", "write_report", "verdict", "summary_table"]
