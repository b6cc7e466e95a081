"""How reports name and format things: cleaning methods, percentages, a run's settings, text tables."""

from __future__ import annotations

import math

from clipbackdoor.reporting.analysis import Pick, mean_std
from clipbackdoor.reporting.collect import RunInfo

# Cleaning counts as successful at this ASR; at the demo's scale the clean false-positive floor for the
# target class is a few percent, so 10 % (not the paper's 5 %) is the criterion the verdict uses.
VERDICT_THRESHOLD = 0.10
# The paper's names for the defenses it compares. Every table, legend and console line names a method through
# method_label(), so this table is the one place a method's display name is written.
METHOD_LABELS = {"cleanclip": "CleanCLIP (MMCL+SSL)", "mmcl": "MMCL only", "ssl": "SSL only"}


def method_label(method: str) -> str:
    """A cleaning method (a registered defense's name, or "fine-tune <objective>") as reports show it: the
    paper's name where it has one, else the name the config gives, so a plug-in defense is recognisable
    from its config without any change to reporting."""
    return METHOD_LABELS.get(method, method)


def method_key(method: str, poisons: int) -> str:
    """A cleaning method as figures tell it apart (its colour); a poisoned cleaning set makes it a method of
    its own."""
    return method if not poisons else f"{method} + {poisons} poison{'s' if poisons != 1 else ''}"


def method_text(method: str, poisons: int = 0) -> str:
    """A cleaning method as tables and legends name it, with the number of poisons in its cleaning data."""
    label = method_label(method)
    return label if not poisons else f"{label}, {poisons} poison{'s' if poisons != 1 else ''} in cleaning data"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def signed(value: float | None) -> str:
    """A change in points with its sign, for table columns headed by what it is a change of (Δacc)."""
    if value is None or math.isnan(value):
        return "–"
    return f"{100 * value:+.1f}"


def change_text(value: float, than: str | None = None, *, more: str = "higher", less: str = "lower") -> str:
    """A signed difference (a fraction) in words with its direction, for prose where a bare sign is easy to
    misread: ``change_text(-0.04, "the poisoned model")`` -> "4.0 points lower than the poisoned model"."""
    points = abs(100 * value)
    if f"{points:.1f}" == "0.0":
        return f"the same as {than}" if than else "unchanged"
    text = f"{points:.1f} points {more if value > 0 else less}"
    return f"{text} than {than}" if than else text


def pm(values: list[float | None], fmt=pct) -> str:
    """``mean ± sd`` over seeds (just the value for one seed)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "–"
    mean, sd = mean_std(finite)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {100 * sd:.1f}"


def run_settings(run: RunInfo) -> str:
    """The settings that tell a run apart from the others of its kind. A key the run does not set (another
    run of the sweep does) is left out rather than shown as "None"."""
    shown: dict[str, object] = {}
    # A defense's option first: the setting it resolves to (defense.weight_decay -> train.weight_decay) is
    # the same fact and would be listed twice under one name.
    keys = sorted(run.params, key=lambda k: not k.startswith("defense."))
    for k in keys:
        v, leaf = run.params[k], k.rsplit(".", 1)[-1]
        if k in ("train.lr", "seed", "defense.name", "poison.budget") or k.startswith("objective.") or v is None:
            continue
        shown.setdefault(leaf, v)
    return ", ".join([f"lr {run.lr:g}", *(f"{leaf} {v}" for leaf, v in shown.items())])


def pick_text(pick: Pick | None, detail: bool) -> str:
    if pick is None:
        return "not reached"
    p = pick.point
    text = f"{pct(p.acc)} (ASR {pct(p.asr)})"
    # The run and epoch on a line of their own: an HTML cell breaks there, which keeps the column narrow.
    return f"{text},\n{run_settings(p.run)}, ep {p.epoch}" if detail else text


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns aligned for a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in rows)])


