"""Every report figure renders for realistic, empty and NaN-laden input, and encodes what its legend says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from matplotlib.patches import FancyArrowPatch

from clipbackdoor.reporting import plots
from clipbackdoor.reporting.plots import Cleaned

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = math.nan


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000  # more than a header: something was rendered


def series(label: str, method: str, points: list[tuple[float, float]], lr: float = 1e-3) -> plots.Series:
    return {"label": label, "method": method, "points": [Cleaned(a, c, lr, e + 1) for e, (a, c) in enumerate(points)]}


def panels() -> dict[str, plots.Panel]:
    return {
        "MMCL": {
            "start": (0.95, 0.42),
            "control_start": (0.01, 0.43),
            "methods": [series("MMCL only", "mmcl", [(0.90, 0.41), (0.60, 0.38)]),
                        series("CleanCLIP", "cleanclip", [(0.05, 0.35), (0.02, 0.30)], lr=3e-3)],
            "controls": [series("CleanCLIP", "cleanclip", [(0.01, 0.36)])],
        },
        "MMCL+SSL": {
            "start": (0.88, 0.40),
            "methods": [series("SSL only", "ssl", [(0.30, 0.33)]),
                        series("CleanCLIP", "cleanclip", [(0.03, 0.37), (0.08, 0.39)])],
        },
    }


def nan_panels() -> dict[str, plots.Panel]:
    return {
        "MMCL": {
            "start": (NAN, 0.4),
            "control_start": None,
            "methods": [series("m", "mmcl", [(NAN, 0.3), (0.2, NAN), (0.1, 0.35)]), series("s", "ssl", [(NAN, NAN)])],
            "controls": [series("m", "mmcl", [(0.01, NAN)])],
        },
        # A panel where nothing is drawable still gets axes (with a "no data" note) rather than an error.
        "SSL": {"methods": [series("c", "cleanclip", [(NAN, NAN)])]},
    }


def trajectories() -> dict[str, list[plots.Trajectory]]:
    return {
        "MMCL": [
            {"label": "CleanCLIP, lr 1e-05", "method": "cleanclip", "lr": 1e-5,
             "points": [(0, 0.95, 0.42), (1, 0.40, 0.40), (2, 0.05, 0.38)]},
            {"label": "MMCL only, lr 0.0001", "method": "mmcl", "lr": 1e-4,
             "points": [(0, 0.95, 0.42), (1, 0.90, 0.35)]},
            # An unknown method falls back to a deterministic colour.
            {"label": "custom, lr 0.0001", "method": "my-defense", "lr": 1e-4, "points": [(0, 0.95, 0.42)]},
        ],
        "SSL": [{"label": "nan", "method": "ssl", "lr": 1e-3,
                 "points": [(0, 0.9, 0.4), (1, NAN, 0.3), (2, 0.1, NAN), (3, 0.2, 0.35)]}],
    }


CURVES: list[plots.Curve] = [
    {"label": "MMCL", "control": False, "seed": 0, "epochs": [1, 2, 3], "acc": [0.1, 0.2, 0.3],
     "asr": [0.5, 0.9, 0.99]},
    {"label": "MMCL", "control": True, "seed": 0, "epochs": [1, 2, 3], "acc": [0.1, NAN, 0.25],
     "asr": [0.4, 0.8, NAN], "clean_target_rate": [0.02, 0.01, 0.01]},
]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts() if t.get_text()]


@pytest.mark.parametrize(
    ("function", "data"),
    [
        (plots.tradeoff_figure, panels()),
        (plots.pareto_figure, panels()),
        (plots.trajectory_figure, trajectories()),
        (plots.pretraining_figure, CURVES),
    ],
    ids=["tradeoff", "pareto", "trajectory", "curves"],
)
def test_writes_png(tmp_path, function, data):
    # Parent folders are created on demand: reports write into fresh run folders.
    path = plots.save(function(data), tmp_path / "figures" / "plot.png")
    assert path == tmp_path / "figures" / "plot.png"
    assert_png(path)


@pytest.mark.parametrize(
    "function",
    [plots.tradeoff_figure, plots.pareto_figure, plots.trajectory_figure, plots.pretraining_figure],
    ids=["tradeoff", "pareto", "trajectory", "curves"],
)
def test_empty_input_writes_no_data_figure(tmp_path, function):
    # A report over a folder with no finished runs must still render.
    empty = [] if function is plots.pretraining_figure else {}
    assert_png(plots.save(function(empty), tmp_path / "empty.png"))


def test_nan_and_single_points(tmp_path):
    assert_png(plots.save(plots.tradeoff_figure(nan_panels()), tmp_path / "scatter.png"))
    assert_png(plots.save(plots.pareto_figure(nan_panels()), tmp_path / "pareto.png"))
    single = {"MMCL": {"methods": [series("m", "mmcl", [(0.5, 0.5)])]}}
    assert_png(plots.save(plots.tradeoff_figure(single), tmp_path / "single_scatter.png"))
    assert_png(plots.save(plots.pareto_figure(single), tmp_path / "single_pareto.png"))
    all_nan = [{"label": "x", "control": False, "seed": 0, "epochs": [1, 2], "acc": [NAN, NAN], "asr": [NAN, NAN]}]
    assert_png(plots.save(plots.pretraining_figure(all_nan), tmp_path / "curves.png"))
    assert_png(plots.save(plots.trajectory_figure({"MMCL": []}), tmp_path / "trajectory.png"))


def test_curve_length_mismatch_is_an_error():
    # Silently truncating a series would shift every later value to the wrong epoch.
    with pytest.raises(ValueError, match="asr"):
        plots.pretraining_figure([{"label": "x", "control": False, "seed": 0, "epochs": [1, 2], "acc": [0.1, 0.2],
                                   "asr": [0.5]}])


def test_method_colours_are_stable_and_distinct():
    known = plots.method_colors(["mmcl", "cleanclip"])
    assert known == {"mmcl": "navy", "cleanclip": plots.METHOD_COLORS["cleanclip"]}
    # The fallback is a pure function of the set of names, so a new method looks the same in every figure.
    many = [f"defense_{i}" for i in range(6)] + ["deep_clustering", "shrink_perturb", "mmcl"]
    colors = plots.method_colors(many)
    assert colors == plots.method_colors(reversed(many))
    assert len(set(colors.values())) == len(many)  # two methods never share a colour
    assert not {"red", "grey"} & set(colors.values())


@pytest.mark.parametrize("function", [plots.tradeoff_figure, plots.pareto_figure])
def test_tradeoff_legends_name_methods_learning_rates_epochs_and_the_band(function):
    texts = legend_texts(function(panels(), chance=0.1))
    # Methods by their labels, never by a colour key; the band and chance line are explained in the legend.
    assert {"MMCL only", "CleanCLIP", "SSL only"} <= set(texts) and "mmcl" not in texts
    encodings = {plots.BAND_LABEL, "chance accuracy (1/10 classes)", "lr 0.001", "lr 0.003", "epoch 1", "epoch 2"}
    assert encodings <= set(texts)


@pytest.mark.parametrize("function", [plots.tradeoff_figure, plots.pareto_figure, plots.trajectory_figure])
def test_a_dashed_line_marks_chance_accuracy(function):
    data = trajectories() if function is plots.trajectory_figure else panels()
    for ax in function(data, chance=0.125).axes:
        lines = [line for line in ax.get_lines() if line.get_label() == "chance accuracy (1/8 classes)"]
        assert len(lines) == 1 and lines[0].get_linestyle() == "--" and list(lines[0].get_ydata()) == [12.5, 12.5]
    # No chance known, no line: a wrong one would be worse than none.
    assert not any("chance" in line.get_label() for ax in function(data).axes for line in ax.get_lines())


def test_learning_rate_is_the_shape_and_epoch_the_size():
    fig = plots.tradeoff_figure(panels())
    ax = fig.axes[0]
    cleanclip = [c for c in ax.collections if c.get_offsets().shape[0] == 2 and tuple(c.get_offsets()[0]) == (5, 35)]
    (points,) = cleanclip
    assert list(points.get_sizes()) == [plots._SIZES[0], plots._SIZES[1]]  # epoch 1 small, epoch 2 large
    legend = {t.get_text(): h for legend in fig.legends for h, t in zip(legend.legend_handles, legend.get_texts())}
    assert legend["lr 0.001"].get_marker() != legend["lr 0.003"].get_marker()


def test_stars_are_drawn_under_every_point():
    # A cleaned model that lands on the poisoned model must not hide behind its star.
    for function in (plots.tradeoff_figure, plots.pareto_figure):
        ax = function(panels()).axes[0]
        stars = [c for c in ax.collections if c.get_label() in (plots.POISONED_LABEL, plots.CONTROL_LABEL)]
        others = [c for c in ax.collections if c not in stars]
        assert stars and others and max(s.get_zorder() for s in stars) < min(o.get_zorder() for o in others)


def test_trajectories_go_through_epochs_in_order_with_arrows():
    shuffled = {"MMCL": [{"label": "CleanCLIP, lr 0.001", "method": "cleanclip", "lr": 1e-3,
                          "points": [(2, 0.05, 0.38), (0, 0.95, 0.42), (1, 0.40, 0.40)]}]}
    ax = plots.trajectory_figure(shuffled).axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    # One arrow per step, start -> epoch 1 -> epoch 2, whatever order the points came in.
    assert [(a._posA_posB[0], a._posA_posB[1]) for a in arrows] == [((95.0, 42.0), (40.0, 40.0)),
                                                                      ((40.0, 40.0), (5.0, 38.0))]
    # No in-panel run labels (they overlapped); the legend names the run, and numbers mark epochs.
    assert {t.get_text() for t in ax.texts} <= {"1", "2"}


def test_pretraining_pairs_a_poisoned_run_with_its_control_and_names_a_shared_seed_once():
    fig = plots.pretraining_figure(CURVES)
    texts = legend_texts(fig)
    assert "MMCL, poisoned" in texts and "MMCL, control" in texts and not any("seed" in t for t in texts)
    assert fig.get_suptitle() == "seed 0"
    acc = fig.axes[0].get_lines()
    assert acc[0].get_color() == acc[1].get_color()  # one hue per objective
    assert (acc[0].get_linestyle(), acc[1].get_linestyle()) == ("-", "--")
    two_seeds = plots.pretraining_figure([CURVES[0], {**CURVES[0], "seed": 1}])
    assert {"MMCL, poisoned, seed 0", "MMCL, poisoned, seed 1"} <= set(legend_texts(two_seeds))
    assert two_seeds.get_suptitle() == ""
