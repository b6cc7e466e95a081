"""Report figures: cleaning trade-offs (ASR vs. accuracy) and pre-training curves.

Every ``*_figure`` function takes plain Python data with metrics as fractions in [0, 1], draws them as
percentages and returns the figure; ``save`` writes it as a PNG. Returning the figure lets tests read back what
a reader sees (legend entries, annotations, lines). Non-finite values (a metric that was never measured) are
skipped rather than plotted, and empty input still yields a figure that says "no data", so a report can always
be assembled.

Names are never made up here: a method or objective is shown as the data names it, and the data come from
``reporting.figures``, which takes them from the same functions as the tables (``reporting.labels``).

Figures are built on standalone :class:`~matplotlib.figure.Figure` objects instead of pyplot: no global figure
state, so functions may run from several threads, and no display is needed.
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NotRequired, TypedDict

import matplotlib
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch
from matplotlib.ticker import MaxNLocator

from clipbackdoor.io import atomic_write
from clipbackdoor.reporting.frontier import pareto_front

# Switching the backend once pyplot is loaded would close the importing program's open figures; these functions
# never go through pyplot, so the backend only matters for code that imports pyplot after us.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

Point = tuple[float, float]
"""An ``(asr, acc)`` pair, both fractions in [0, 1]."""


class Cleaned(NamedTuple):
    """One evaluated epoch of a cleaning run (fractions), with what tells it apart from its neighbours."""

    asr: float
    acc: float
    lr: float
    epoch: int


class Series(TypedDict):
    """The evaluated epochs of every run of one cleaning method."""

    label: str  # the method as the report's tables name it (labels.method_text)
    method: str  # what its colour is looked up by (labels.method_key)
    points: Sequence[Cleaned]


class Panel(TypedDict, total=False):
    """Cleaning results for one pre-training objective (a plain dict; every key may be omitted)."""

    start: Point | None  # the poisoned model before cleaning
    control_start: Point | None  # the same recipe pre-trained on clean data
    methods: Sequence[Series]  # the poisoned model cleaned by each method
    controls: Sequence[Series]  # the same methods applied to the un-poisoned model


class Trajectory(TypedDict):
    """One cleaning run followed over its epochs; epoch 0 is the model before cleaning."""

    label: str  # the legend's name for the run: its method as tables name it, then its settings
    method: str  # colour key
    lr: float  # line style
    points: Sequence[tuple[float, float, float]]  # (epoch, asr, acc)


class Curve(TypedDict):
    """Metrics of one pre-training run per epoch."""

    label: str  # the pre-training objective, as the pre-training table names it
    control: bool  # pre-trained without poison: drawn in its poisoned twin's hue, dashed and lighter
    seed: int
    epochs: Sequence[float]
    acc: Sequence[float]
    asr: Sequence[float]
    clean_target_rate: NotRequired[Sequence[float]]  # how often clean images are classified as the target


METHOD_COLORS: dict[str, str] = {"mmcl": "navy", "ssl": "maroon", "cleanclip": "darkorange"}
"""Colour of each known cleaning method, shared by every figure so a method looks the same throughout. Names
are not kept here: legends take them from the tables' labels (``labels.method_text``)."""

# Red and grey are taken by the poisoned and un-poisoned models, so the fallbacks avoid them.
_FALLBACK_COLORS = ("teal", "darkviolet", "olive", "saddlebrown", "deeppink", "darkgreen", "steelblue", "goldenrod")
# Learning rates in order of size: a marker shape (points) or a line style (trajectories) each.
LR_MARKERS = ("o", "s", "^", "D", "v", "P", "h", "p")
LR_LINESTYLES = ("-", "--", ":", "-.")

ASR_LABEL = "Attack success rate (%)"
ACC_LABEL = "Zero-shot top-1 accuracy (%)"
ASR_LIMITS = (-5.0, 105.0)
LOW_ASR_BAND = 10.0  # percent; the region where a backdoor counts as removed

# Legend entries that name no method or objective: the reference models and the figures' encodings.
POISONED_LABEL = "poisoned model (before cleaning)"
CONTROL_LABEL = "un-poisoned model (control)"
BAND_LABEL = f"ASR ≤ {LOW_ASR_BAND:.0f}%: backdoor removed"
HOLLOW_LABEL = "hollow: the control, cleaned the same way"
DASHED_HOLLOW_LABEL = "dashed, hollow: the control, cleaned the same way"
ORDER_LABEL = "arrows: epoch order; number, marker size: epoch"
TARGET_RATE_LABEL = "dotted: clean images classified as the target"
REFERENCE_LABELS = frozenset({POISONED_LABEL, CONTROL_LABEL, BAND_LABEL, HOLLOW_LABEL, DASHED_HOLLOW_LABEL,
                              ORDER_LABEL, TARGET_RATE_LABEL})

DPI = 120
_PANEL_SIZE = (4.8, 4.2)  # inches per panel
_SIZES = (14.0, 90.0)  # marker area (pt²) of the first and the last cleaning epoch
_TRAJECTORY_SIZES = (10.0, 45.0)  # smaller than _SIZES: a trajectory's markers must leave its arrowheads visible
_STAR_SIZE = 260.0
# The sides of its point an epoch number may take (offsets in points: right-above, left-above, right-below,
# left-below), and the box (points) a one-digit number at fontsize 7 covers.
_NUMBER_OFFSETS = ((3.0, 2.0), (-3.0, 2.0), (3.0, -2.0), (-3.0, -2.0))
_NUMBER_BOX = (6.0, 8.0)
_NO_DATA = "no data"


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """A colour per cleaning method, distinct within ``methods``: the known methods' own, and for others (a
    plug-in defense) a fallback chosen by the name's checksum, or the next free one where two names would
    share it. The same set of methods always gets the same colours, so a report passes one mapping to all
    of its figures."""
    methods = set(methods)  # iterated twice
    colors = {m: METHOD_COLORS[m.lower()] for m in methods if m.lower() in METHOD_COLORS}
    for method in sorted(methods - set(colors)):
        # crc32, not hash(): str hashes are salted per process, and a method must look the same in every run.
        start = zlib.crc32(method.lower().encode("utf-8"))
        free = [_FALLBACK_COLORS[(start + i) % len(_FALLBACK_COLORS)] for i in range(len(_FALLBACK_COLORS))]
        colors[method] = next((c for c in free if c not in colors.values()), free[0])
    return colors


def objective_title(objective: str) -> str:
    """Panel title for a pre-training objective as the tables name it, e.g. ``"Pre-trained with MMCL"``."""
    return f"Pre-trained with {objective}"


def chance_label(chance: float) -> str:
    return f"chance accuracy (1/{round(1 / chance)} classes)"


def lr_label(lr: float) -> str:
    return f"lr {lr:g}"


def epoch_label(epoch: int) -> str:
    return f"epoch {epoch}"


def tradeoff_figure(panels: Mapping[str, Panel], *, chance: float | None = None,
                    colors: Mapping[str, str] | None = None) -> Figure:
    """Every evaluated epoch of every cleaning run as a point in the ASR/accuracy plane, one panel per
    pre-training objective: colour is the method, shape the learning rate, size the epoch; hollow points are
    the un-poisoned control cleaned the same way."""

    def draw(ax: Axes, series: Series, color: str, control: bool, enc: _Encoding) -> int:
        return _scatter(ax, series["points"], color, enc, control=control)

    return _tradeoff_figure(panels, draw, chance, colors, HOLLOW_LABEL)


def pareto_figure(panels: Mapping[str, Panel], *, chance: float | None = None,
                  colors: Mapping[str, str] | None = None) -> Figure:
    """Each cleaning method's Pareto front (lowest ASR for a given accuracy), one panel per objective.

    The fronts are drawn as ``steps-post`` lines, so the height at any ASR reads as the best accuracy a method
    reached without exceeding that ASR; the points on a front are encoded as in ``tradeoff_figure``. The
    controls' fronts are dashed and lighter, with hollow points.
    """

    def draw(ax: Axes, series: Series, color: str, control: bool, enc: _Encoding) -> int:
        finite = [p for p in series["points"] if _is_finite(p.asr, p.acc)]
        front = [finite[i] for i in pareto_front([(p.asr, p.acc) for p in finite])]
        if not front:
            return 0
        ax.plot([100 * p.asr for p in front], [100 * p.acc for p in front], drawstyle="steps-post", color=color,
                linestyle="--" if control else "-", linewidth=1.0 if control else 1.6,
                alpha=0.45 if control else 0.9, zorder=2 if control else 3)
        return _scatter(ax, front, color, enc, control=control)

    return _tradeoff_figure(panels, draw, chance, colors, DASHED_HOLLOW_LABEL)


def trajectory_figure(panels: Mapping[str, Sequence[Trajectory]], *, chance: float | None = None,
                      colors: Mapping[str, str] | None = None) -> Figure:
    """How cleaning runs move through the ASR/accuracy plane epoch by epoch, one panel per objective.

    Colour is the method and line style the learning rate; the legend names each run (no labels in the
    panels, where they would overlap). Every run starts at its poisoned model (the star, epoch 0) and each
    arrow leads to the next epoch, whose marker is larger and, where there is room, numbered, so the order of
    epochs reads off the figure even where a long first step passes other points.
    """
    if not panels:
        return _no_data_figure()
    lrs = sorted({float(t["lr"]) for ts in panels.values() for t in ts})
    styles = {lr: LR_LINESTYLES[i % len(LR_LINESTYLES)] for i, lr in enumerate(lrs)}
    colors = colors or method_colors({t["method"] for ts in panels.values() for t in ts})
    fig, axes = _panel_figure(len(panels), sharey=True)
    runs: dict[str, Artist] = {}  # legend handle per run, in order of appearance
    for ax, (objective, trajectories) in zip(axes, panels.items(), strict=True):
        numbers = _trajectory_panel(ax, trajectories, colors, styles, runs)
        _finish_tradeoff_axes(ax, objective, first=ax is axes[0], empty=not numbers, chance=chance)
        _place_numbers(ax, numbers)  # last: where a number fits depends on the panel's final limits
    named = [(handle, label) for label, handle in runs.items()]
    references = [*_reference_column(axes, chance), (_blank(), ORDER_LABEL)]
    # Runs in columns of at most as many rows as the references take, so that the legend stays short.
    per_column = max(len(references), 3)
    _legend(fig, [references, *(named[i:i + per_column] for i in range(0, len(named), per_column))])
    return fig


def _trajectory_panel(ax: Axes, trajectories: Sequence[Trajectory], colors: Mapping[str, str],
                      styles: Mapping[float, str], runs: dict[str, Artist]) -> list[_Number]:
    """One objective's trajectories and their start stars; adds each run's legend handle to ``runs`` and
    returns the epoch numbers to write, one per cleaned epoch drawn."""
    starts, numbers = set(), []
    for trajectory in trajectories:
        rows = sorted(_finite_rows(trajectory["points"]), key=lambda row: row[0])  # epochs in order
        if not rows:
            continue
        color, linestyle = colors[trajectory["method"]], styles[float(trajectory["lr"])]
        runs.setdefault(trajectory["label"], _line(color=color, linestyle=linestyle, marker="o", markersize=4))
        _draw_trajectory(ax, rows, color, linestyle)
        xy = [(100 * asr, 100 * acc) for _, asr, acc in rows]
        for i, (epoch, _, _) in enumerate(rows):
            if epoch > 0:
                numbers.append(_Number(f"{epoch:g}", xy[i], color, xy[i - 1] if i else None,
                                       xy[i + 1] if i + 1 < len(xy) else None))
        if rows[0][0] == 0:
            starts.add((rows[0][1], rows[0][2]))
    # Runs cleaned from the same checkpoint share their first point; one star per distinct start suffices.
    for start in sorted(starts):
        _draw_star(ax, start, control=False)
    return numbers


def pretraining_figure(curves: Sequence[Curve]) -> Figure:
    """Accuracy and ASR per pre-training epoch, side by side, one line per run.

    A poisoned run and its control share a hue (one per objective): the poisoned run solid with filled
    markers, the control dashed, lighter, with hollow markers. A run's clean-target rate (clean images
    classified as the target: the floor an ASR has to be read against) is dotted on the ASR panel. When all
    runs share a seed it is named once, in the title, rather than in every legend entry.
    """
    if not curves:
        return _no_data_figure()
    fig, (ax_acc, ax_asr) = _panel_figure(2, sharey=False)
    hues = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(c["label"] for c in curves))}
    seeds = sorted({c["seed"] for c in curves})
    entries: dict[str, list[tuple[Artist, str]]] = {}
    drawn_acc = drawn_asr = 0
    for curve in curves:
        style = _curve_style(hues[curve["label"]], curve["control"], seeds.index(curve["seed"]))
        drawn_acc += _plot_series(ax_acc, curve, "acc", **style)
        drawn_asr += _plot_series(ax_asr, curve, "asr", **style)
        if curve.get("clean_target_rate") is not None:
            drawn_asr += _plot_series(ax_asr, curve, "clean_target_rate", **{**style, "linestyle": ":",
                                                                             "linewidth": 1.0})
        label = f"{curve['label']}, {'control' if curve['control'] else 'poisoned'}"
        if len(seeds) > 1:
            label += f", seed {curve['seed']}"
        entries.setdefault(curve["label"], []).append((_line(**style), label))
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
    if len(seeds) == 1:
        fig.suptitle(f"seed {seeds[0]}", fontsize=10)
    target = [(_line(color="dimgrey", linestyle=":", linewidth=1.0), TARGET_RATE_LABEL)]
    _legend(fig, [*entries.values(), target])
    return fig


class ScaleSeries(TypedDict):
    """The headline at one architecture (``reporting.scale``), values per seed as fractions."""

    label: str  # the architecture, with its size
    x: float  # where it sits on the scale axis (parameters)
    start_asr: Mapping[str, Sequence[float]]  # objective -> pre-cleaning ASR per seed
    gaps: Sequence[float]  # MMCL+SSL's minus MMCL's net accuracy drop per seed; inf: MMCL+SSL never got there


def scale_figure(series: Sequence[ScaleSeries], *, learned: float, gap: float) -> Figure:
    """Two panels against model size: the backdoor each objective learned, and the headline's gap.

    Every seed is a dot; the line joins the means and the bars are one standard deviation. A seed where
    MMCL+SSL never got under the ASR bound has no finite gap: it is an open triangle at the top edge.
    """
    if not series:
        return _no_data_figure()
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
    return fig


# ---------------------------------------------------------------------------------------------------------------
# helpers


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created) and return the path."""
    path = Path(path)
    # Written through a temporary file so that a report being regenerated never shows a half-written image.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))
    return path


class _Encoding:
    """How a trade-off figure tells points apart beyond their method's colour: a marker shape per learning rate
    and a marker size growing with the epoch, the same in every panel of the figure."""

    def __init__(self, points: Sequence[Cleaned]) -> None:
        self.lrs = sorted({float(p.lr) for p in points})
        epochs = sorted({int(p.epoch) for p in points})
        self.epochs = [epochs[0], epochs[-1]] if len(epochs) > 1 else epochs

    def marker(self, lr: float) -> str:
        return LR_MARKERS[self.lrs.index(float(lr)) % len(LR_MARKERS)]

    def size(self, epoch: int) -> float:
        if len(self.epochs) < 2:
            return _SIZES[1]
        first, last = self.epochs
        return _SIZES[0] + (_SIZES[1] - _SIZES[0]) * (epoch - first) / (last - first)


def _tradeoff_figure(panels: Mapping[str, Panel], draw, chance: float | None, colors: Mapping[str, str] | None,
                     hollow_label: str) -> Figure:
    """One accuracy-vs-ASR panel per pre-training objective: the reference stars underneath (so that no point
    hides behind them), then controls, then the cleaned models of each method; ``draw`` returns how many
    points it drew. The legend names the methods as ``Series.label`` gives them."""
    if not panels:
        return _no_data_figure()
    every = [p for panel in panels.values() for key in ("methods", "controls") for series in panel.get(key) or ()
             for p in series["points"] if _is_finite(p.asr, p.acc)]
    enc = _Encoding(every)
    colors = colors or method_colors({s["method"] for panel in panels.values() for key in ("methods", "controls")
                                      for s in panel.get(key) or ()})
    fig, axes = _panel_figure(len(panels), sharey=True)
    methods: dict[str, str] = {}
    hollow = False
    for ax, (objective, panel) in zip(axes, panels.items(), strict=True):
        drawn = _draw_star(ax, panel.get("control_start"), control=True) + _draw_star(ax, panel.get("start"),
                                                                                      control=False)
        for control, key in ((True, "controls"), (False, "methods")):
            for series in panel.get(key) or ():
                n = draw(ax, series, colors[series["method"]], control, enc)
                drawn += n
                hollow |= control and n > 0
                if n and not control:
                    methods.setdefault(series["label"], colors[series["method"]])
        _finish_tradeoff_axes(ax, objective, first=ax is axes[0], empty=drawn == 0, chance=chance)
    shapes = [(_line(marker=enc.marker(lr)), lr_label(lr)) for lr in enc.lrs]
    if hollow:
        shapes.append((_line(marker="o", markerfacecolor="none"), hollow_label))
    sizes = [(_line(marker="o", markersize=math.sqrt(enc.size(e))), epoch_label(e)) for e in enc.epochs]
    _legend(fig, [_reference_column(axes, chance), _method_column(methods), shapes, sizes])
    return fig


def _scatter(ax: Axes, points: Sequence[Cleaned], color: str, enc: _Encoding, *, control: bool) -> int:
    """``points`` in percent, one marker shape per learning rate and sized by epoch; returns how many."""
    finite = [p for p in points if _is_finite(p.asr, p.acc)]
    for lr in dict.fromkeys(float(p.lr) for p in finite):
        mine = [p for p in finite if float(p.lr) == lr]
        xs, ys = [100 * p.asr for p in mine], [100 * p.acc for p in mine]
        sizes = [enc.size(p.epoch) for p in mine]
        if control:  # hollow in the method's colour: the same method, read as background
            ax.scatter(xs, ys, s=sizes, marker=enc.marker(lr), facecolors="none", edgecolors=color,
                       linewidths=1.0, alpha=0.5, zorder=2)
        else:
            ax.scatter(xs, ys, s=sizes, marker=enc.marker(lr), color=color, edgecolors="white", linewidths=0.5,
                       alpha=0.85, zorder=3)
    return len(finite)


def _draw_trajectory(ax: Axes, rows: list[tuple[float, float, float]], color: str, linestyle: str) -> None:
    """One run: an arrow from each epoch to the next and a marker at every cleaned epoch, larger the later."""
    xy = [(100 * asr, 100 * acc) for _, asr, acc in rows]
    for a, b in zip(xy, xy[1:]):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=11, color=color, linestyle=linestyle,
                                     linewidth=1.2, alpha=0.8, shrinkA=3, shrinkB=4, zorder=2))
    cleaned = [(epoch, x, y) for (epoch, _, _), (x, y) in zip(rows, xy) if epoch > 0]
    last = max((epoch for epoch, _, _ in cleaned), default=1.0)
    low, high = _TRAJECTORY_SIZES
    sizes = [low + (high - low) * (epoch - 1) / max(last - 1, 1) for epoch, _, _ in cleaned]
    ax.scatter([x for _, x, _ in cleaned], [y for _, _, y in cleaned], s=sizes, color=color, edgecolors="white",
               linewidths=0.5, alpha=0.9, zorder=3)


class _Number(NamedTuple):
    """An epoch number to write beside its point (percent coordinates), and the points its arrows come from
    and lead to, which it should not cover."""

    text: str
    at: tuple[float, float]
    color: str
    previous: tuple[float, float] | None
    following: tuple[float, float] | None


def _place_numbers(ax: Axes, numbers: list[_Number]) -> None:
    """Write each epoch number beside its point, on the first side of ``_NUMBER_OFFSETS`` (those facing away
    from its own arrows first) where it covers no point, no arrow and no number already written. Runs all
    head for ASR 0, so their last epochs crowd together; a number with no free side is left out (its arrows
    and marker size still give the order) rather than written over something else."""
    ax.autoscale_view()  # the data-to-pixel transform below needs the panel's final limits
    scale = ax.figure.dpi / 72  # pixels per point
    pixels = ax.transData.transform
    where = [tuple(pixels(n.at)) for n in numbers]
    # The arrows, as points every 3 points along each: a digit on an arrow would hide its head or shaft.
    arrows = [p for n in numbers if n.previous is not None for p in _along(pixels(n.previous), pixels(n.at), 3 * scale)]
    labels: list[tuple[float, float]] = []
    for i, (number, (px, py)) in enumerate(zip(numbers, where)):
        others = [p for j, p in enumerate(where) if j != i] + arrows + labels
        for dx, dy in sorted(_NUMBER_OFFSETS, key=lambda o: _toward_arrows(o, number, (px, py), pixels)):
            # Centre of a one-digit label set off by (dx, dy) points, aligned away from its point.
            cx = px + (dx + math.copysign(_NUMBER_BOX[0] / 2, dx)) * scale
            cy = py + (dy + math.copysign(_NUMBER_BOX[1] / 2, dy)) * scale
            if all(abs(cx - ox) > _NUMBER_BOX[0] * scale or abs(cy - oy) > _NUMBER_BOX[1] * scale for ox, oy in others):
                # Under the arrows (zorder 1.9 < 2): an arrowhead is never hidden by a digit.
                ax.annotate(number.text, number.at, xytext=(dx, dy), textcoords="offset points", fontsize=7,
                            color=number.color, ha="left" if dx >= 0 else "right",
                            va="bottom" if dy >= 0 else "top", zorder=1.9)
                labels.append((cx, cy))
                break


def _along(a, b, step: float) -> list[tuple[float, float]]:
    """Points every ``step`` pixels on the segment from ``a`` to ``b`` (pixels), ends excluded."""
    n = int(math.hypot(b[0] - a[0], b[1] - a[1]) // step)
    return [(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(1, n)]


def _toward_arrows(offset: tuple[float, float], number: _Number, at: tuple[float, float], pixels) -> float:
    """How much a label on side ``offset`` faces the arrows into and out of its point (lower is better)."""
    facing = 0.0
    for other in (number.previous, number.following):
        if other is not None:
            ox, oy = pixels(other)
            length = math.hypot(ox - at[0], oy - at[1]) or 1.0
            facing += (offset[0] * (ox - at[0]) + offset[1] * (oy - at[1])) / length
    return facing


def _is_finite(*values: Any) -> bool:
    return all(value is not None and math.isfinite(float(value)) for value in values)


def _finite_rows(rows: Sequence[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    return [(float(e), float(a), float(c)) for e, a, c in rows if _is_finite(e, a, c)]


def _draw_star(ax: Axes, point: Point | None, *, control: bool) -> int:
    """Draw the (un-)poisoned starting model; returns how many points were drawn (0 or 1)."""
    if point is None or not _is_finite(*point):
        return 0
    asr, acc = point
    # Under every point (zorder 1): a cleaned model that lands on its starting model must stay visible.
    ax.scatter([100.0 * float(asr)], [100.0 * float(acc)], marker="*", s=_STAR_SIZE,
               color="grey" if control else "red", edgecolors="black", linewidths=0.6, alpha=0.8,
               label=CONTROL_LABEL if control else POISONED_LABEL, zorder=1)
    return 1


def _curve_style(color: str, control: bool, seed_index: int) -> dict[str, Any]:
    """A pre-training run's line: its objective's hue; the control dashed, lighter, hollow; seeds by marker."""
    marker = LR_MARKERS[seed_index % len(LR_MARKERS)]
    if control:
        return {"color": color, "linestyle": "--", "alpha": 0.55, "marker": marker, "markerfacecolor": "none"}
    return {"color": color, "linestyle": "-", "alpha": 1.0, "marker": marker, "markerfacecolor": color}


def _plot_series(ax: Axes, curve: Mapping[str, Any], key: str, linewidth: float = 1.5, **style: Any) -> int:
    """Plot ``curve[key]`` (fractions) against ``curve["epochs"]`` in percent; returns the points drawn."""
    epochs, values = curve["epochs"], curve[key]
    if len(values) != len(epochs):
        raise ValueError(f"curve {curve['label']!r}: {len(values)} {key} values for {len(epochs)} epochs")
    kept = [(float(e), 100.0 * float(v)) for e, v in zip(epochs, values, strict=True) if _is_finite(e, v)]
    if kept:
        ax.plot([e for e, _ in kept], [v for _, v in kept], markersize=3.5, linewidth=linewidth, **style)
    return len(kept)


def _panel_figure(n: int, *, sharey: bool) -> tuple[Figure, list[Axes]]:
    # Constrained layout is what lets the shared legend sit outside the panels without overlapping them.
    fig = Figure(figsize=(_PANEL_SIZE[0] * n, _PANEL_SIZE[1]), layout="constrained")
    axes = fig.subplots(1, n, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def _finish_tradeoff_axes(ax: Axes, objective: str, *, first: bool, empty: bool, chance: float | None) -> None:
    ax.axvspan(ASR_LIMITS[0], LOW_ASR_BAND, color="tab:green", alpha=0.08, linewidth=0, zorder=0,
               label=BAND_LABEL)
    if chance is not None:
        ax.axhline(100 * chance, color="dimgrey", linestyle="--", linewidth=1.0, zorder=0.5,
                   label=chance_label(chance))
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


def _line(color: str = "dimgrey", **style: Any) -> Line2D:
    """A legend handle: a line, a marker or both, drawn nowhere."""
    style = {"linestyle": "" if "marker" in style and "linestyle" not in style else "-", **style}
    return Line2D([], [], color=color, **style)


def _blank() -> Line2D:
    return Line2D([], [], linestyle="", marker="")


def _reference_column(axes: Sequence[Axes], chance: float | None) -> list[tuple[Artist, str]]:
    """The stars, the ASR band and the chance line, as the axes drew them (each once)."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    order = [POISONED_LABEL, CONTROL_LABEL, BAND_LABEL, *([chance_label(chance)] if chance is not None else [])]
    return [(entries[label], label) for label in order if label in entries]


def _method_column(methods: Mapping[str, str]) -> list[tuple[Artist, str]]:
    # A colour swatch, not a marker: shapes stand for learning rates.
    return [(Patch(facecolor=color, edgecolor="none"), label) for label, color in methods.items()]


def _legend(fig: Figure, columns: Sequence[Sequence[tuple[Artist, str]]]) -> None:
    """One legend below the panels with one kind of entry per column (references, methods, learning rates,
    epochs): matplotlib fills a legend column by column, so each column is padded to the longest."""
    columns = [c for c in columns if c]
    if not columns:
        return
    rows = max(len(c) for c in columns)
    cells = [entry for c in columns for entry in [*c, *[(_blank(), "")] * (rows - len(c))]]
    fig.legend([h for h, _ in cells], [label for _, label in cells], loc="outside lower center",
               ncols=len(columns), fontsize=8, frameon=False, columnspacing=1.5)


def _figure_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend below all panels, each label once (panels repeat the same entries)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=min(len(entries), 4),
                   fontsize=8, frameon=False)


def _no_data_figure() -> Figure:
    # An empty frame around the words, so that the tight bounding box of save() keeps the figure's size.
    fig = Figure(figsize=_PANEL_SIZE)
    ax = fig.add_subplot()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, _NO_DATA, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="grey")
    return fig
