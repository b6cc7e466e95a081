"""Every report figure writes a PNG for realistic, empty and NaN-laden input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from clipbackdoor.reporting import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = math.nan


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000  # more than a header: something was rendered


def panels() -> dict[str, plots.Panel]:
    return {
        "mmcl": {
            "start": (0.95, 0.42),
            "control_start": (0.01, 0.43),
            "methods": {"mmcl": [(0.90, 0.41), (0.60, 0.38)], "cleanclip": [(0.05, 0.35), (0.02, 0.30)]},
            "controls": {"cleanclip": [(0.01, 0.36)]},
        },
        "MMCL+SSL": {
            "start": (0.88, 0.40),
            "methods": {"ssl": [(0.30, 0.33)], "cleanclip": [(0.03, 0.37), (0.08, 0.39)]},
        },
    }


def nan_panels() -> dict[str, plots.Panel]:
    return {
        "mmcl": {
            "start": (NAN, 0.4),
            "control_start": None,
            "methods": {"mmcl": [(NAN, 0.3), (0.2, NAN), (0.1, 0.35)], "ssl": [(NAN, NAN)]},
            "controls": {"mmcl": [(0.01, NAN)]},
        },
        # A panel where nothing is drawable still gets axes (with a "no data" note) rather than an error.
        "ssl": {"methods": {"cleanclip": [(NAN, NAN)]}},
    }


def trajectories() -> dict[str, list[plots.Trajectory]]:
    return {
        "mmcl": [
            {"label": "lr=1e-5", "method": "cleanclip", "points": [(0, 0.95, 0.42), (1, 0.40, 0.40), (2, 0.05, 0.38)]},
            {"label": "lr=1e-4", "method": "mmcl", "points": [(0, 0.95, 0.42), (1, 0.90, 0.35)]},
            # An unknown method falls back to a deterministic style.
            {"label": "custom", "method": "my-defense", "points": [(0, 0.95, 0.42)]},
        ],
        "ssl": [
            {"label": "nan", "method": "ssl", "points": [(0, 0.9, 0.4), (1, NAN, 0.3), (2, 0.1, NAN), (3, 0.2, 0.35)]}
        ],
    }


CURVES = [
    {"label": "MMCL", "epochs": [1, 2, 3], "acc": [0.1, 0.2, 0.3], "asr": [0.5, 0.9, 0.99]},
    {
        "label": "MMCL+SSL",
        "epochs": [1, 2, 3],
        "acc": [0.1, NAN, 0.25],
        "asr": [0.4, 0.8, NAN],
        "clean_target_rate": [0.02, 0.01, 0.01],
    },
]


@pytest.mark.parametrize(
    ("function", "data"),
    [
        (plots.scatter_panels, panels()),
        (plots.pareto_panels, panels()),
        (plots.trajectory_panels, trajectories()),
        (plots.pretraining_curves, CURVES),
    ],
    ids=["scatter", "pareto", "trajectory", "curves"],
)
def test_writes_png(tmp_path, function, data):
    # Parent folders are created on demand: reports write into fresh run folders.
    path = function(data, tmp_path / "figures" / "plot.png")
    assert path == tmp_path / "figures" / "plot.png"
    assert_png(path)


@pytest.mark.parametrize(
    "function",
    [plots.scatter_panels, plots.pareto_panels, plots.trajectory_panels, plots.pretraining_curves],
    ids=["scatter", "pareto", "trajectory", "curves"],
)
def test_empty_input_writes_no_data_figure(tmp_path, function):
    # A report over a folder with no finished runs must still render.
    empty = [] if function is plots.pretraining_curves else {}
    assert_png(function(empty, tmp_path / "empty.png"))


def test_nan_and_single_points(tmp_path):
    assert_png(plots.scatter_panels(nan_panels(), tmp_path / "scatter.png"))
    assert_png(plots.pareto_panels(nan_panels(), tmp_path / "pareto.png"))
    single = {"mmcl": {"methods": {"mmcl": [(0.5, 0.5)]}}}
    assert_png(plots.scatter_panels(single, tmp_path / "single_scatter.png"))
    assert_png(plots.pareto_panels(single, tmp_path / "single_pareto.png"))
    all_nan = [{"label": "x", "epochs": [1, 2], "acc": [NAN, NAN], "asr": [NAN, NAN]}]
    assert_png(plots.pretraining_curves(all_nan, tmp_path / "curves.png"))
    assert_png(plots.trajectory_panels({"mmcl": []}, tmp_path / "trajectory.png"))


def test_curve_length_mismatch_is_an_error(tmp_path):
    # Silently truncating a series would shift every later value to the wrong epoch.
    with pytest.raises(ValueError, match="asr"):
        plots.pretraining_curves(
            [{"label": "x", "epochs": [1, 2], "acc": [0.1, 0.2], "asr": [0.5]}], tmp_path / "c.png"
        )


def test_method_styles_are_stable():
    assert plots.method_style("mmcl") == {"color": "navy", "marker": "o"}
    assert plots.method_style("CleanCLIP") == plots.METHOD_STYLE["cleanclip"]
    # The fallback is a pure function of the name, so a new method looks the same in every figure and report.
    assert plots.method_style("my-defense") == plots.method_style("my-defense")
    assert plots.method_style("my-defense")["color"] not in {"red", "grey"}
