"""Report figures: cleaning trade-offs (ASR vs. accuracy) and pre-training curves.

Every function takes plain Python data with metrics as fractions in [0, 1], draws them as percentages, writes one
PNG and returns its path. Non-finite values (a metric that was never measured) are skipped rather than plotted,
and empty input still yields a figure that says "no data", so a report can always be assembled.

Figures are built on standalone :class:`~matplotlib.figure.Figure` objects instead of pyplot: no global figure
state, so functions may run from several threads, and no display is needed.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clipbackdoor.io import atomic_write
from clipbackdoor.reporting.frontier import pareto_front

# Switching the backend once pyplot is loaded would close the importing program's open figures; these functions
# never go through pyplot, so the backend only matters for code that imports pyplot after us.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

Point = tuple[float, float]
"""An ``(asr, acc)`` pair, both fractions in [0, 1]."""


class Panel(TypedDict, total=False):
    """Cleaning results for one pre-training objective (a plain dict; every key may be omitted)."""

    start: Point | None  # the poisoned model before cleaning
    control_start: Point | None  # the same recipe pre-trained on clean data
    methods: Mapping[str, Sequence[Point]]  # cleaning method -> one point per run/epoch
    controls: Mapping[str, Sequence[Point]]  # the same methods applied to the un-poisoned model


class Trajectory(TypedDict):
    """One cleaning run followed over its epochs; epoch 0 is the model before cleaning."""

    label: str
    method: str
    points: Sequence[tuple[float, float, float]]  # (epoch, asr, acc)


class Curve(TypedDict):
    """Metrics of one pre-training run per epoch."""

    label: str
    epochs: Sequence[float]
    acc: Sequence[float]
    asr: Sequence[float]
    clean_target_rate: NotRequired[Sequence[float]]  # how often clean images are classified as the target


METHOD_STYLE: dict[str, dict[str, str]] = {
    "mmcl": {"color": "navy", "marker": "o"},
    "ssl": {"color": "maroon", "marker": "s"},
    "cleanclip": {"color": "darkorange", "marker": "X"},
}
"""Colour and marker of each known cleaning method, shared by every figure so a method looks the same throughout."""

# Red and grey are taken by the poisoned model and the controls, so the fallbacks avoid them.
_FALLBACK_COLORS = ("teal", "darkviolet", "olive", "saddlebrown", "deeppink", "darkgreen", "steelblue", "goldenrod")
_FALLBACK_MARKERS = ("D", "^", "v", "P", "h", "<", ">", "p")

OBJECTIVE_TITLES: dict[str, str] = {
    "mmcl": "MMCL",
    "ssl": "SSL",
    "mmcl-ssl": "MMCL+SSL",
    "mmcl_ssl": "MMCL+SSL",
    "mmcl+ssl": "MMCL+SSL",
}
"""Display names for lower-case objective identifiers (config names); any other panel name is shown verbatim."""

ASR_LABEL = "Attack success rate (%)"
ACC_LABEL = "Zero-shot top-1 accuracy (%)"
ASR_LIMITS = (-5.0, 105.0)
LOW_ASR_BAND = 10.0  # percent; the region where a backdoor counts as removed

DPI = 120
_PANEL_SIZE = (4.8, 4.2)  # inches per panel
_POINT_SIZE = 36.0
_STAR_SIZE = 300.0
_NO_DATA = "no data"
_POISONED_LABEL = "poisoned model"
_CONTROL_LABEL = "un-poisoned model"


def method_style(method: str) -> dict[str, str]:
    """``{"color": ..., "marker": ...}`` for a cleaning method; unknown names get a deterministic fallback."""
    key = method.lower()
    if key in METHOD_STYLE:
        return dict(METHOD_STYLE[key])
    # crc32, not hash(): str hashes are salted per process, and a method must look the same in every report.
    code = zlib.crc32(key.encode("utf-8"))
    return {
        "color": _FALLBACK_COLORS[code % len(_FALLBACK_COLORS)],
        "marker": _FALLBACK_MARKERS[(code // len(_FALLBACK_COLORS)) % len(_FALLBACK_MARKERS)],
    }


def objective_title(objective: str) -> str:
    """Panel title for a pre-training objective, e.g. ``"Pre-trained with MMCL"``."""
    return f"Pre-trained with {OBJECTIVE_TITLES.get(objective, objective)}"


def scatter_panels(panels: Mapping[str, Panel], path: str | Path) -> Path:
    """Every cleaning run as a point in the ASR/accuracy plane, one panel per pre-training objective."""

    def draw(ax: Axes, method: str, points: Sequence[Point], control: bool) -> int:
        xs, ys = _percent_points(points)
        if xs:
            style = method_style(method)
            if control:
                ax.scatter(xs, ys, label=f"{method} (control)", **_control_marker(style), zorder=2)
            else:
                ax.scatter(xs, ys, color=style["color"], marker=style["marker"], s=_POINT_SIZE, alpha=0.5,
                           linewidths=0, label=method, zorder=3)
        return len(xs)

    return _tradeoff_figure(panels, path, draw)


def pareto_panels(panels: Mapping[str, Panel], path: str | Path) -> Path:
    """Each cleaning method's Pareto front (lowest ASR for a given accuracy), one panel per objective.

    The fronts are drawn as ``steps-post`` lines, so the height at any ASR reads as the best accuracy a method
    reached without exceeding that ASR. Controls, when given, are dashed grey fronts with hollow markers.
    """

    def draw(ax: Axes, method: str, points: Sequence[Point], control: bool) -> int:
        xs, ys = _front_percent(points)
        if xs:
            style = method_style(method)
            if control:
                ax.plot(xs, ys, drawstyle="steps-post", color="grey", linestyle="--", linewidth=1.0, alpha=0.6,
                        marker=style["marker"], markerfacecolor="none", markeredgecolor="grey",
                        label=f"{method} (control)", zorder=2)
            else:
                ax.plot(xs, ys, drawstyle="steps-post", color=style["color"], linewidth=1.5,
                        marker=style["marker"], markersize=6, label=method, zorder=3)
        return len(xs)

    return _tradeoff_figure(panels, path, draw)


def _tradeoff_figure(panels: Mapping[str, Panel], path: str | Path, draw) -> Path:
    """One accuracy-vs-ASR panel per pre-training objective: controls first (underneath), then the cleaned
    models of each method, then the reference stars; ``draw`` returns how many points it drew."""
    if not panels:
        return _save_no_data(path)
    fig, axes = _panel_figure(len(panels), sharey=True)
    for ax, (objective, panel) in zip(axes, panels.items(), strict=True):
        drawn = 0
        for control, key in ((True, "controls"), (False, "methods")):
            for method, points in (panel.get(key) or {}).items():
                drawn += draw(ax, method, points, control)
        drawn += _draw_starts(ax, panel)
        _finish_tradeoff_axes(ax, objective, first=ax is axes[0], empty=drawn == 0)
    _figure_legend(fig, axes)
    return _save(fig, path)


def trajectory_panels(panels: Mapping[str, Sequence[Trajectory]], path: str | Path) -> Path:
    """How cleaning runs move through the ASR/accuracy plane epoch by epoch, one panel per objective.

    Markers grow with the epoch so the direction of travel is visible without arrows; each trajectory's last
    point carries its label and its first point (the model before cleaning) the poisoned-model star.
    """
    if not panels:
        return _save_no_data(path)
    fig, axes = _panel_figure(len(panels), sharey=True)
    for ax, (objective, trajectories) in zip(axes, panels.items(), strict=True):
        cleaned = [(trajectory, _finite_rows(trajectory["points"])) for trajectory in trajectories]
        # Sizes are relative to the panel's last epoch so that runs of different lengths share one scale.
        last_epoch = max((row[0] for _, rows in cleaned for row in rows), default=0.0)
        starts: set[Point] = set()
        drawn = 0
        for trajectory, rows in cleaned:
            if not rows:
                continue
            rows.sort(key=lambda row: row[0])  # stable: equal epochs keep their given order
            style = method_style(trajectory["method"])
            xs = [100.0 * asr for _, asr, _ in rows]
            ys = [100.0 * acc for _, _, acc in rows]
            sizes = [15.0 + 85.0 * (epoch / last_epoch if last_epoch > 0 else 0.0) for epoch, _, _ in rows]
            # The line's own small markers hide under the scatter; they exist so the legend shows the method's marker.
            ax.plot(
                xs,
                ys,
                color=style["color"],
                marker=style["marker"],
                markersize=4,
                linewidth=1.0,
                alpha=0.7,
                label=trajectory["method"],
                zorder=2,
            )
            ax.scatter(
                xs,
                ys,
                s=sizes,
                color=style["color"],
                marker=style["marker"],
                alpha=0.8,
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
            )
            ax.annotate(
                trajectory["label"],
                (xs[-1], ys[-1]),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
                color=style["color"],
            )
            starts.add((rows[0][1], rows[0][2]))
            drawn += len(rows)
        # Runs cleaned from the same checkpoint share their first point; one star per distinct start suffices.
        for start in sorted(starts):
            _draw_star(ax, start, control=False)
        _finish_tradeoff_axes(ax, objective, first=ax is axes[0], empty=drawn == 0)
    _figure_legend(fig, axes)
    return _save(fig, path)


def pretraining_curves(curves: Sequence[Curve], path: str | Path) -> Path:
    """Accuracy and ASR per pre-training epoch, side by side, one line per run.

    A run's clean-target rate (clean images classified as the target) is dashed in the run's colour on the ASR
    panel: it is the floor an ASR has to be read against.
    """
    if not curves:
        return _save_no_data(path)
    fig, (ax_acc, ax_asr) = _panel_figure(2, sharey=False)
    drawn_acc = drawn_asr = 0
    for i, curve in enumerate(curves):
        label = curve["label"]
        color = f"C{i % 10}"
        drawn_acc += _plot_series(ax_acc, curve, "acc", color=color, linestyle="-", label=label)
        drawn_asr += _plot_series(ax_asr, curve, "asr", color=color, linestyle="-", label=label)
        if curve.get("clean_target_rate") is not None:
            drawn_asr += _plot_series(
                ax_asr, curve, "clean_target_rate", color=color, linestyle="--", label=f"{label} (clean → target)"
            )
    ax_acc.set_title("Zero-shot accuracy")
    ax_acc.set_ylabel(ACC_LABEL)
    ax_asr.set_title("Attack success rate")
    ax_asr.set_ylabel(ASR_LABEL)
    ax_asr.set_ylim(*ASR_LIMITS)
    for ax, drawn in ((ax_acc, drawn_acc), (ax_asr, drawn_asr)):
        ax.set_xlabel("Pre-training epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn == 0:
            _no_data_text(ax)
    _figure_legend(fig, [ax_acc, ax_asr])
    return _save(fig, path)


class ScaleSeries(TypedDict):
    """The headline at one architecture (``reporting.scale``), values per seed as fractions."""

    label: str  # the architecture, with its size
    x: float  # where it sits on the scale axis (parameters)
    start_asr: Mapping[str, Sequence[float]]  # objective -> pre-cleaning ASR per seed
    gaps: Sequence[float]  # MMCL+SSL's minus MMCL's net accuracy drop per seed; inf: MMCL+SSL never got there


def scale_curve(series: Sequence[ScaleSeries], path: str | Path, *, learned: float, gap: float) -> Path:
    """Two panels against model size: the backdoor each objective learned, and the headline's gap.

    Every seed is a dot; the line joins the means and the bars are one standard deviation. A seed where
    MMCL+SSL never got under the ASR bound has no finite gap: it is an open triangle at the top edge.
    """
    if not series:
        return _save_no_data(path)
    fig, (ax_asr, ax_gap) = _panel_figure(2, sharey=False)
    xs = [s["x"] for s in series]
    for i, objective in enumerate(dict.fromkeys(o for s in series for o in s["start_asr"])):
        color, means, where = f"C{i}", [], []
        for s in series:
            values = [100 * v for v in s["start_asr"].get(objective, []) if _is_finite(v)]
            ax_asr.scatter([s["x"]] * len(values), values, color=color, s=14, alpha=0.6, zorder=3)
            if values:
                means.append(sum(values) / len(values))
                where.append(s["x"])
        ax_asr.plot(where, means, color=color, marker="o", label=objective_title(objective))
    ax_asr.axhline(100 * learned, color="grey", linestyle=":", label=f"target: ASR > {100 * learned:.0f}%")
    ax_asr.set_ylim(*ASR_LIMITS)
    ax_asr.set_ylabel("ASR before cleaning (%)")
    ax_asr.set_title("Backdoor learned in pre-training")

    means, spreads, where, top = [], [], [], 0.0
    for s in series:
        finite = [100 * g for g in s["gaps"] if _is_finite(g)]
        if finite:
            ax_gap.scatter([s["x"]] * len(finite), finite, color="C3", s=14, alpha=0.6, zorder=3)
            mean = sum(finite) / len(finite)
            sd = (sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5 if len(finite) > 1 else 0.0
            means.append(mean), spreads.append(sd), where.append(s["x"])
            top = max(top, *finite, mean + sd)
    ax_gap.errorbar(where, means, yerr=spreads, color="C3", marker="o", capsize=4,
                    label="gap, mean ± sd over seeds")
    top = max(top, 100 * gap) + 3
    never = [(s["x"], sum(math.isinf(g) for g in s["gaps"])) for s in series]
    if any(n for _, n in never):
        ax_gap.scatter([x for x, n in never if n], [top] * sum(1 for _, n in never if n), marker="^",
                       facecolors="none", edgecolors="C3", s=60, zorder=3, label="MMCL+SSL never reached the bound")
    ax_gap.axhline(100 * gap, color="grey", linestyle=":", label=f"target: gap ≥ {100 * gap:.0f} points")
    ax_gap.axhline(0, color="black", linewidth=0.8)
    ax_gap.set_ylabel("MMCL+SSL minus MMCL net accuracy drop (points)")
    ax_gap.set_title("Accuracy cost of cleaning to ASR ≤ 10%")
    # Parameter counts span decades; positions that are not sizes (a run that did not log one) stay linear.
    log = all(x > 0 for x in xs) and len(set(xs)) == len(xs)
    for ax in (ax_asr, ax_gap):
        if log:
            ax.set_xscale("log")
        ax.set_xticks(xs, [s["label"] for s in series])
        ax.minorticks_off()
        ax.set_xlabel("Model (parameters, log scale)" if log else "Model")
        ax.grid(True, alpha=0.3)
    _figure_legend(fig, [ax_asr, ax_gap])
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _is_finite(*values: Any) -> bool:
    return all(value is not None and math.isfinite(float(value)) for value in values)


def _percent_points(points: Sequence[Point] | None) -> tuple[list[float], list[float]]:
    """x (ASR) and y (accuracy) in percent, dropping points with a non-finite coordinate."""
    kept = [(float(asr), float(acc)) for asr, acc in (points or ()) if _is_finite(asr, acc)]
    return [100.0 * asr for asr, _ in kept], [100.0 * acc for _, acc in kept]


def _front_percent(points: Sequence[Point] | None) -> tuple[list[float], list[float]]:
    """The Pareto front of ``points`` in percent, ordered by increasing ASR."""
    # pareto_front drops NaN but not infinities, which cannot be drawn; filter first, then index the survivors.
    finite = [(float(asr), float(acc)) for asr, acc in (points or ()) if _is_finite(asr, acc)]
    return _percent_points([finite[i] for i in pareto_front(finite)])


def _finite_rows(rows: Sequence[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    return [(float(e), float(a), float(c)) for e, a, c in rows if _is_finite(e, a, c)]


def _control_marker(style: Mapping[str, str]) -> dict[str, Any]:
    # Hollow grey markers keep the method's shape while reading as background next to the filled poisoned runs.
    return {
        "marker": style["marker"],
        "s": _POINT_SIZE,
        "facecolors": "none",
        "edgecolors": "grey",
        "linewidths": 1.0,
        "alpha": 0.4,
    }


def _draw_star(ax: Axes, point: Point | None, *, control: bool) -> int:
    """Draw the (un-)poisoned starting model; returns how many points were drawn (0 or 1)."""
    if point is None or not _is_finite(*point):
        return 0
    asr, acc = point
    ax.scatter(
        [100.0 * float(asr)],
        [100.0 * float(acc)],
        marker="*",
        s=_STAR_SIZE,
        color="grey" if control else "red",
        edgecolors="black",
        linewidths=0.6,
        label=_CONTROL_LABEL if control else _POISONED_LABEL,
        zorder=9 if control else 10,
    )
    return 1


def _draw_starts(ax: Axes, panel: Panel) -> int:
    return _draw_star(ax, panel.get("control_start"), control=True) + _draw_star(ax, panel.get("start"), control=False)


def _plot_series(ax: Axes, curve: Mapping[str, Any], key: str, *, color: str, linestyle: str, label: str) -> int:
    """Plot ``curve[key]`` (fractions) against ``curve["epochs"]`` in percent; returns the points drawn."""
    epochs, values = curve["epochs"], curve[key]
    if len(values) != len(epochs):
        raise ValueError(f"curve {curve['label']!r}: {len(values)} {key} values for {len(epochs)} epochs")
    kept = [(float(e), 100.0 * float(v)) for e, v in zip(epochs, values, strict=True) if _is_finite(e, v)]
    if kept:
        ax.plot(
            [e for e, _ in kept],
            [v for _, v in kept],
            color=color,
            linestyle=linestyle,
            marker="o",
            markersize=3,
            linewidth=1.5,
            label=label,
        )
    return len(kept)


def _panel_figure(n: int, *, sharey: bool) -> tuple[Figure, list[Axes]]:
    # Constrained layout is what lets the shared legend sit outside the panels without overlapping them.
    fig = Figure(figsize=(_PANEL_SIZE[0] * n, _PANEL_SIZE[1]), layout="constrained")
    axes = fig.subplots(1, n, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def _finish_tradeoff_axes(ax: Axes, objective: str, *, first: bool, empty: bool) -> None:
    ax.axvspan(ASR_LIMITS[0], LOW_ASR_BAND, color="tab:green", alpha=0.08, linewidth=0, zorder=0)
    ax.set_xlim(*ASR_LIMITS)
    ax.set_xlabel(ASR_LABEL)
    if first:  # the y axis is shared, so one label is enough
        ax.set_ylabel(ACC_LABEL)
    ax.set_title(objective_title(objective))
    ax.grid(True, alpha=0.3)
    if empty:
        _no_data_text(ax)


def _no_data_text(ax: Axes) -> None:
    ax.text(0.5, 0.5, _NO_DATA, transform=ax.transAxes, ha="center", va="center", color="grey")


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend below all panels, each label once (panels repeat the same methods and stars).

    The reference models lead the legend: every other entry is read relative to them.
    """
    entries: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    references = [label for label in (_POISONED_LABEL, _CONTROL_LABEL) if label in entries]
    entries = {label: entries[label] for label in [*references, *(k for k in entries if k not in references)]}
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncols=min(len(entries), 4),
            fontsize=8,
            frameon=False,
        )


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    # Written through a temporary file so that a report being regenerated never shows a half-written image.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))
    return path


def _save_no_data(path: str | Path) -> Path:
    fig = Figure(figsize=_PANEL_SIZE)
    fig.text(0.5, 0.5, _NO_DATA, ha="center", va="center", fontsize=14, color="grey")
    path = Path(path)
    # No tight bounding box: it would crop the figure down to the two words.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path
