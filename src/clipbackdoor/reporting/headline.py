"""The paper's headline as three checkable targets, scaled to a run folder's measure.

Verma et al. (2023) report that CleanCLIP removes a backdoor from an MMCL-pre-trained CLIP at almost no
accuracy cost, but not from an MMCL+SSL-pre-trained one (CC6M: +0.3 against -10.8 points at ASR <= 10%).
The targets below say whether a set of runs shows that, seed by seed, with every cost taken net of the
un-poisoned control (the same cleaning run applied to a model pre-trained without poison), so that the
ordinary cost of fine-tuning is never mistaken for the cost of removing the backdoor:

1. **learned**: both objectives learn the backdoor at the same poison rate: mean pre-cleaning ASR above
   ``LEARNED_ASR`` over seeds;
2. **mmcl_cleaned**: CleanCLIP brings the MMCL model to ASR <= ``ASR_BOUND`` within ``MMCL_COST`` points of
   its starting accuracy, net of its control, in every seed;
3. **ssl_costlier**: the MMCL+SSL model's net accuracy drop at ASR <= ``ASR_BOUND`` exceeds the MMCL model's
   by at least ``GAP`` points (or it never reaches the bound) in every seed, and the mean gap exceeds twice
   the seed spread.

Nothing here looks at test images to choose anything: the oracle rule that picks the best checkpoint under
the ASR bound is the paper's, applied the same way to both objectives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipbackdoor.reporting.analysis import GroupSummary, SeedResult, mean_std

LEARNED_ASR = 0.90
ASR_BOUND = 0.10
MMCL_COST = 0.02
GAP = 0.05
MARK = {True: "met", False: "not met", None: "cannot tell"}


@dataclass
class Target:
    key: str
    description: str
    met: bool | None  # None: the runs cannot answer (a group or seed is missing)
    detail: str


def cleanclip_groups(groups: list[GroupSummary]) -> dict[str, GroupSummary]:
    """The CleanCLIP groups on clean cleaning sets, by pre-training objective: what the headline is about."""
    return {g.objective: g for g in groups if g.method == "cleanclip" and not g.poisons}


def net_cost(seed: SeedResult) -> float | None:
    """Accuracy points lost by the best checkpoint at ASR <= ASR_BOUND, net of the control's change at the
    same epoch (a positive number is a loss); inf if the bound was never reached; None if unknown."""
    pick = seed.best.get(ASR_BOUND)
    if pick is None:
        return math.inf
    if pick.control_delta is None or math.isnan(pick.delta):
        return None
    return -(pick.delta - pick.control_delta)


def _points(value: float) -> str:
    return "never reached" if math.isinf(value) else f"{100 * value:+.1f}"


def headline_targets(groups: list[GroupSummary]) -> list[Target]:
    """The three targets for the CleanCLIP groups of clean cleaning sets (see the module docstring)."""
    clean = cleanclip_groups(groups)
    mmcl, ssl = clean.get("MMCL"), clean.get("MMCL+SSL")
    targets = []

    # 1. Both objectives learned the backdoor.
    desc = f"both objectives learn the poison: mean ASR > {LEARNED_ASR:.0%} before cleaning"
    if mmcl is None or ssl is None:
        targets.append(Target("learned", desc, None, "needs CleanCLIP runs of both MMCL and MMCL+SSL models"))
    else:
        asr = {name: mean_std([(s.start or {}).get("asr_top1") for s in g.seeds])[0]
               for name, g in (("MMCL", mmcl), ("MMCL+SSL", ssl))}
        met = all(a > LEARNED_ASR for a in asr.values())
        targets.append(Target("learned", desc, met, ", ".join(f"{k} {100 * v:.1f}%" for k, v in asr.items())))

    # 2. CleanCLIP cleans the MMCL model cheaply.
    desc = (f"CleanCLIP brings MMCL to ASR ≤ {ASR_BOUND:.0%} within {100 * MMCL_COST:.0f} points of its "
            "accuracy, net of its control, in every seed")
    if mmcl is None:
        targets.append(Target("mmcl_cleaned", desc, None, "no CleanCLIP runs of an MMCL model"))
    else:
        costs = [net_cost(s) for s in mmcl.seeds]
        known = [c for c in costs if c is not None]
        met = None if len(known) < len(costs) else all(c <= MMCL_COST for c in known)
        detail = "net accuracy change per seed (points): " + ", ".join(
            "no control" if c is None else _points(-c) for c in costs)
        targets.append(Target("mmcl_cleaned", desc, met, detail))

    # 3. MMCL+SSL pays more, seed by seed and beyond the spread.
    desc = (f"MMCL+SSL's net accuracy drop at ASR ≤ {ASR_BOUND:.0%} exceeds MMCL's by ≥ {100 * GAP:.0f} points "
            "(or it never gets there) in every seed, beyond the seed spread")
    if mmcl is None or ssl is None:
        targets.append(Target("ssl_costlier", desc, None, "needs CleanCLIP runs of both objectives"))
    else:
        by_seed = {s.seed: net_cost(s) for s in mmcl.seeds}
        pairs = [(by_seed.get(s.seed), net_cost(s)) for s in ssl.seeds]
        if not pairs or set(by_seed) != {s.seed for s in ssl.seeds} or any(None in p for p in pairs):
            targets.append(Target("ssl_costlier", desc, None,
                                  "needs both objectives, with controls, for the same seeds"))
        else:
            # A seed whose MMCL model never reached the bound cannot show MMCL+SSL paying more: -inf.
            gaps = [-math.inf if math.isinf(a) else math.inf if math.isinf(b) else b - a for a, b in pairs]
            finite = [g for g in gaps if not math.isinf(g)]
            mean, sd = mean_std(finite) if finite else (math.nan, math.nan)
            met = all(g >= GAP for g in gaps) and (len(finite) < 2 or mean > 2 * sd)
            names = {math.inf: "SSL never reached", -math.inf: "MMCL never reached"}
            detail = "gap per seed (points): " + ", ".join(names.get(g) or f"{100 * g:+.1f}" for g in gaps)
            if len(finite) > 1:
                detail += f"; mean {100 * mean:+.1f} ± {100 * sd:.1f}"
            targets.append(Target("ssl_costlier", desc, met, detail))
    return targets


@dataclass
class Decay:
    """How far CleanCLIP got at one learning rate: ASR after the last epoch both objectives' runs reached."""

    lr: float
    epoch: int
    mmcl: float  # mean over runs and seeds
    ssl: float


def asr_decay(groups: list[GroupSummary]) -> list[Decay]:
    """ASR of the cleaned MMCL and MMCL+SSL models at each learning rate both were cleaned with (CleanCLIP on
    clean cleaning sets), after the last epoch both reached: the paper's "harder to remove" at a fixed budget,
    which a small scale can show even where the accuracy cost cannot."""
    clean = cleanclip_groups(groups)
    if "MMCL" not in clean or "MMCL+SSL" not in clean:
        return []
    asr: dict[str, dict[float, dict[int, list[float]]]] = {}
    for objective in ("MMCL", "MMCL+SSL"):
        by_lr = asr.setdefault(objective, {})
        for s in clean[objective].seeds:
            for p in s.points:
                by_lr.setdefault(p.run.lr, {}).setdefault(p.epoch, []).append(p.asr)
    out = []
    for lr in sorted(set(asr["MMCL"]) & set(asr["MMCL+SSL"])):
        epochs = set(asr["MMCL"][lr]) & set(asr["MMCL+SSL"][lr])
        if epochs:
            e = max(epochs)
            out.append(Decay(lr, e, mean_std(asr["MMCL"][lr][e])[0], mean_std(asr["MMCL+SSL"][lr][e])[0]))
    return out


def decay_text(decay: list[Decay]) -> str:
    """The decay comparison in one paragraph, or "" when there is nothing to compare."""
    if not decay:
        return ""
    slower = sum(d.ssl > d.mmcl for d in decay)
    lead = ("The MMCL+SSL backdoor decays more slowly than the MMCL one at every cleaning learning rate"
            if slower == len(decay) else
            f"The MMCL+SSL backdoor decays more slowly than the MMCL one at {slower} of {len(decay)} cleaning "
            "learning rates")
    pairs = "; ".join(f"lr {d.lr:g}: {100 * d.mmcl:.1f}% against {100 * d.ssl:.1f}% after {d.epoch} "
                      f"epoch{'s' if d.epoch != 1 else ''}" for d in decay)
    return f"{lead} (ASR of MMCL against MMCL+SSL, mean over seeds; {pairs})."


TARGET_HEADERS = ["target", "", "measured"]


def target_rows(targets: list[Target]) -> list[list[str]]:
    """The targets as table rows: target, met, detail."""
    return [[t.description, MARK[t.met], t.detail] for t in targets]


def targets_markdown(targets: list[Target]) -> str:
    """The targets as a markdown table: target, met, detail."""
    rows = [f"| {' | '.join(row)} |" for row in target_rows(targets)]
    return "\n".join(["| the paper's headline, as targets | | measured |", "|---|---|---|", *rows])
