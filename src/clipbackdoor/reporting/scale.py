"""The headline's effect against scale: one point per pre-trained architecture, seeds as error bars.

When a run folder holds pre-trainings of several architectures (a sweep over ``model.name``), the question
"does CleanCLIP cost MMCL+SSL models more accuracy than MMCL models?" gets one answer per architecture,
and the way that answer moves with capacity is the result: the paper's gap (CC6M, RN50: -10.8 against
+0.3 points) may be absent in a small model and grow with its size. The effect plotted is the **gap**:
MMCL+SSL's net accuracy drop at ASR <= ``ASR_BOUND`` minus MMCL's, net of the un-poisoned controls, per
seed (``headline.net_cost``). A seed where MMCL+SSL never reaches the bound has no finite gap; it is
counted and drawn apart, never averaged as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from clipbackdoor.reporting.analysis import GroupSummary, mean_std
from clipbackdoor.reporting.collect import RunInfo
from clipbackdoor.reporting.headline import (
    ASR_BOUND,
    MARK,
    Decay,
    Target,
    asr_decay,
    cleanclip_groups,
    decay_text,
    headline_targets,
    net_cost,
)
from clipbackdoor.reporting.labels import change_text, pm


@dataclass
class ScalePoint:
    """The headline at one architecture."""

    model: str
    parameters: int | None
    seeds: list[int]
    start_acc: dict[str, list[float | None]]  # objective -> pre-cleaning accuracy per seed
    start_asr: dict[str, list[float | None]]  # objective -> pre-cleaning ASR per seed
    cost: dict[str, list[float | None]]  # objective -> net accuracy drop at ASR <= bound per seed (inf: never)
    gaps: list[float] = field(default_factory=list)  # per seed; +inf: MMCL+SSL never reached the bound
    targets: list[Target] = field(default_factory=list)
    decay: list[Decay] = field(default_factory=list)  # ASR after cleaning, per learning rate

    @property
    def finite_gaps(self) -> list[float]:
        return [g for g in self.gaps if not math.isinf(g)]


def _sizes(runs: list[RunInfo]) -> dict[str, int | None]:
    """Each pre-trained architecture's logged parameter count (None: no run of it logged one), smallest
    first, then by name."""
    sizes: dict[str, int | None] = {}
    for r in runs:
        if r.kind == "pretrain":
            sizes[r.model] = sizes.get(r.model) or r.model_parameters
    return {m: sizes[m] for m in sorted(sizes, key=lambda m: (sizes[m] is None, sizes[m] or 0, m))}


def scales(runs: list[RunInfo]) -> list[str]:
    """The architectures of the pre-training runs, smallest first (by logged parameter count, then name)."""
    return list(_sizes(runs))


def scale_points(groups: list[GroupSummary], runs: list[RunInfo]) -> list[ScalePoint]:
    """One point per architecture, from the CleanCLIP groups on clean cleaning sets."""
    points = []
    for model, parameters in _sizes(runs).items():
        mine = [g for g in groups if g.model == model]
        clean = cleanclip_groups(mine)
        seeds = sorted({s.seed for g in clean.values() for s in g.seeds})
        point = ScalePoint(model, parameters, seeds, {}, {}, {}, targets=headline_targets(mine),
                           decay=asr_decay(mine))
        for objective, g in clean.items():
            by_seed = {s.seed: s for s in g.seeds}
            point.start_acc[objective] = [(by_seed[s].start or {}).get("zeroshot_top1") if s in by_seed else None
                                          for s in seeds]
            point.start_asr[objective] = [(by_seed[s].start or {}).get("asr_top1") if s in by_seed else None
                                          for s in seeds]
            point.cost[objective] = [net_cost(by_seed[s]) if s in by_seed else None for s in seeds]
        for a, b in zip(point.cost.get("MMCL", []), point.cost.get("MMCL+SSL", [])):
            if a is None or b is None or math.isinf(a):
                continue  # no control, or MMCL itself never cleaned: no gap to speak of
            point.gaps.append(math.inf if math.isinf(b) else b - a)
        points.append(point)
    return points


def _change(cost: float | None) -> str:
    """A net cost as the accuracy change it is (negative: a loss), in points."""
    if cost is None:
        return "–"
    return "never" if math.isinf(cost) else f"{-100 * cost + 0.0:+.1f}"  # + 0.0: no "-0.0"


def _mean_pm(values: list[float | None]) -> str:
    """``mean ± sd`` (%) of the finite values: a seed that never reached a bound is not a number to average."""
    return pm([v for v in values if v is not None and not math.isinf(v)])


def parameters_text(parameters: int | None) -> str:
    return "–" if parameters is None else f"{parameters / 1e6:.1f}M"


SCALE_HEADERS = ["model", "parameters", "seeds", "MMCL acc / ASR", "MMCL+SSL acc / ASR",
                 f"MMCL net Δacc @ASR≤{ASR_BOUND:.0%} per seed", f"MMCL+SSL net Δacc @ASR≤{ASR_BOUND:.0%} per seed",
                 "gap (MMCL+SSL's extra drop, points)", "targets"]


def scale_table(points: list[ScalePoint]) -> tuple[list[str], list[list[str]]]:
    """One row per architecture: starting points, each objective's net cost per seed, the gap, the targets."""
    rows = []
    for p in points:
        gaps = p.finite_gaps
        gap = _mean_pm(gaps)  # points, mean ± sd over seeds with a finite gap
        never = len(p.gaps) - len(gaps)
        if never:
            gap += f" (+{never} seed{'s' if never > 1 else ''}: MMCL+SSL never reached)"
        rows.append([
            p.model, parameters_text(p.parameters), str(len(p.seeds)),
            f"{_mean_pm(p.start_acc.get('MMCL', []))} / {_mean_pm(p.start_asr.get('MMCL', []))}",
            f"{_mean_pm(p.start_acc.get('MMCL+SSL', []))} / {_mean_pm(p.start_asr.get('MMCL+SSL', []))}",
            ", ".join(_change(c) for c in p.cost.get("MMCL", [])) or "–",
            ", ".join(_change(c) for c in p.cost.get("MMCL+SSL", [])) or "–",
            gap, ", ".join(f"{t.key} {MARK[t.met]}" for t in p.targets),
        ])
    return SCALE_HEADERS, rows


def scale_verdict(points: list[ScalePoint]) -> str:
    """The effect against scale in plain words, largest architecture last."""
    if not points:
        return "No pre-training runs were found, so there is no result against scale."
    lines = []
    for p in points:
        gaps, never = p.finite_gaps, sum(math.isinf(g) for g in p.gaps)
        met = [t.key for t in p.targets if t.met]
        learned = ", ".join(f"{o} {_mean_pm(p.start_asr.get(o, []))}%" for o in ("MMCL", "MMCL+SSL")
                            if o in p.start_asr)
        text = (f"{p.model} ({parameters_text(p.parameters)} parameters, {len(p.seeds)} seed(s)): "
                f"ASR before cleaning {learned or '–'}. ")
        if gaps:
            mean, sd = mean_std(gaps)
            spread = f" (± {100 * sd:.1f} over seeds)" if len(gaps) > 1 else ""
            than = change_text(mean, "MMCL's", more="larger", less="smaller")
            text += f"MMCL+SSL's net accuracy drop at ASR ≤ {ASR_BOUND:.0%} is {than}{spread}"
            text += f" ({never} more seed(s) where MMCL+SSL never got there)." if never else "."
        elif never:
            text += f"MMCL+SSL never reached ASR ≤ {ASR_BOUND:.0%} in {never} seed(s)."
        else:
            text += "No gap can be computed (a cleaning group, a control or a seed is missing)."
        text += f" Targets met ({len(met)} of {len(p.targets)}): {', '.join(met) if met else 'none'}."
        if p.decay:
            text += " " + decay_text(p.decay)
        lines.append(text)
    all_met = [p for p in points if p.targets and all(t.met for t in p.targets)]
    if all_met:
        lines.append(f"All three targets (the paper's headline) are met at: {', '.join(p.model for p in all_met)}.")
    else:
        lines.append("The paper's headline (all three targets) does not appear at any of these scales.")
    return "\n\n".join(lines)
