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

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipbackdoor.io import atomic_write_text
from clipbackdoor.reporting import figures, html, plots
from clipbackdoor.reporting.analysis import GroupSummary, SeedResult, analyse, pretraining_runs
from clipbackdoor.reporting.collect import GALLERY_NAME, RunInfo, collect_runs, write_index
from clipbackdoor.reporting.headline import (
    GAP,
    LEARNED_ASR,
    TARGET_HEADERS,
    headline_targets,
    target_rows,
    targets_markdown,
)
from clipbackdoor.reporting.labels import text_table
from clipbackdoor.reporting.scale import parameters_text, scale_points, scale_table, scale_verdict, scales
from clipbackdoor.reporting.tables import (
    config_table,
    csv_text,
    headline_table,
    pretraining_table,
    summary_csv_rows,
    summary_table,
)
from clipbackdoor.reporting.verdict import answer, verdict

SCALES_DIR = "scales"  # several architectures: one whole report each, in SCALES_DIR/<model>/


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
    answer: str = ""  # the verdict's first paragraph when it answers the paper's question ("": no answer)

    def summary(self) -> str:
        """What a terminal shows (``report``, ``demo``): the answer first, then the short table, then the rest
        of the verdict."""
        details = self.verdict.removeprefix(self.answer).lstrip("\n")
        return "\n\n".join(part for part in (self.answer, self.headline, details) if part)



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
    c_headers, c_rows = config_table(groups)
    per_config = f"## Cleaning, per configuration\n\n{html.markdown_table(c_headers, c_rows)}\n\n" if c_rows else ""
    targets = headline_targets(groups)
    atomic_write_text(out / "summary.md", f"## Cleaning\n\n{summary_md}\n\n{per_config}## Pre-training\n\n{pre_md}\n\n"
                                          f"## The paper's headline\n\n{targets_markdown(targets)}\n")
    atomic_write_text(out / "summary.csv", csv_text(summary_csv_rows(groups)))
    atomic_write_text(out / "pareto.csv", csv_text([
        {"model": g.model, "pretrain_objective": g.objective, "method": g.method, "cleaning_poisons": g.poisons,
         "seed": s.seed, "asr": p.asr, "acc": p.acc, "run": p.run.name, "epoch": p.epoch}
        for g in groups for s in g.seeds for p in s.front]))

    images = [{"kind": "image", "caption": f.title, "note": f.caption,
               "path": plots.save(f.figure, out / "plots" / f"{f.name}.png")}
              for f in figures.report_figures(groups, runs)]
    text = verdict(groups)
    headline = headline_table(groups)
    sections: list[dict[str, Any]] = [
        {"kind": "table", "caption": "Cleaning: accuracy and ASR (%) per pre-training objective and cleaning "
         "method", "headers": headers, "rows": rows,
         "note": "best acc @ASR≤x: oracle rule (max test accuracy over all runs and epochs with ASR ≤ x). "
                 "Δacc: change from the poisoned model. control Δacc: the same cleaning run applied to an "
                 "un-poisoned model, at the same epoch. defender pick: the checkpoint with the lowest loss on "
                 "held-out clean pairs (no trigger, no test labels)."},
        *([{"kind": "table", "caption": "Cleaning, per configuration (mean ± sd over seeds)", "headers": c_headers,
            "rows": c_rows, "note": "Each configuration on its own, over its evaluated epochs: the table above "
                                    "takes the best over all of them."}] if c_rows else []),
        *images[:3],
        {"kind": "table", "caption": "Pre-training", "headers": p_headers, "rows": p_rows},
        {"kind": "table", "caption": "The paper's headline, as targets (costs net of the un-poisoned controls)",
         "headers": TARGET_HEADERS, "rows": target_rows(targets)},
        images[3],
    ]
    galleries = _trigger_galleries(runs)
    if galleries:
        sections.append({"kind": "images", "caption": "Triggers", "images": galleries,
                         "note": "Top row: training images as they are; bottom row: the same images poisoned, "
                                 "as training saw them (each attack's trigger_gallery.png)."})
    html_path = _write_html(out, runs_dir, runs, title, text, sections, problems)
    return Report(out, html_path, summary_md, headline, text, groups, problems, answer=answer(groups))


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
    image = plots.save(plots.scale_figure(series, learned=LEARNED_ASR, gap=GAP), out / "plots" / "scale.png")
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
                         "headers": TARGET_HEADERS, "rows": target_rows(targets),
                         "note": f"The whole report of this architecture: {report.html_path.relative_to(out)}"})
    atomic_write_text(out / "summary.md", "\n".join(parts))
    atomic_write_text(out / "summary.csv", csv_text(summary_csv_rows(groups)))
    text = scale_verdict(points)
    html_path = _write_html(out, runs_dir, runs, title, text, sections, problems)
    headline = "\n\n".join([text_table(headers, rows),
                             *(f"{model}:\n{r.headline}" for model, r in per_scale.items())])
    return Report(out, html_path, "\n".join(parts), headline, text, groups, problems)


def _write_html(out: Path, runs_dir: Path, runs: list[RunInfo], title: str, verdict_text: str,
                sections: list[dict[str, Any]], problems: list[str]) -> Path:
    """``out/report.html``: the page, the config it came from, and what was left out of it."""
    page = html.render_html(
        title=title, verdict=verdict_text, sections=sections, config_text=_config_text(runs_dir, runs),
        generated=f"generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(runs)} run "
                  f"directories under {runs_dir}" + "".join(f"; {p}" for p in problems),
    )
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    return html_path


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


def _config_text(runs_dir: Path, runs: list[RunInfo]) -> str:
    spec = runs_dir / "sweep.yaml"
    if spec.is_file():
        return spec.read_text()
    pre = pretraining_runs(runs)
    chosen = pre[0] if pre else runs[0]
    return f"# {chosen.name}/config.yaml\n" + yaml.safe_dump(chosen.config, sort_keys=False)


__all__ = ["Report", "SeedResult", "write_report", "verdict", "summary_table"]
