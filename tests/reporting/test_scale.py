"""The headline against scale: runs of several architectures are reported apart, one point each."""

import math

from run_dirs import make_run

from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.report import write_report
from clipbackdoor.reporting.scale import scale_points, scale_table, scale_verdict, scales


def _scale(root, model, parameters, seed, *, mmcl, ssl, asr=0.95, start=0.6):
    """One seed of one architecture: MMCL and MMCL+SSL models and their controls, cleaned by CleanCLIP.
    ``mmcl``/``ssl``: accuracy change of the poisoned model's cleaning at ASR 0.05 (None: ASR stays at 0.5);
    every control loses 1 point."""
    for name, objective, change in (("mmcl", (1.0, 0.0), mmcl), ("ssl", (1.0, 1.0), ssl)):
        pre = f"{model}/pre/{name}-s{seed}"
        make_run(root, pre, evals=[(0.1, 0.0, None), (start, asr, None)], objective=objective, poison=0.2,
                 seed=seed, model=model, parameters=parameters)
        make_run(root, f"{pre}-ctl", evals=[(0.1, 0.0, None), (start, 0.02, None)], objective=objective, seed=seed,
                 model=model, parameters=parameters)
        cleaned = (start + change, 0.05, 2.0) if change is not None else (start, 0.5, 2.0)
        for poisoned, source in ((True, pre), (False, f"{pre}-ctl")):
            make_run(root, f"{model}/clean/{name}-s{seed}{'' if poisoned else '-ctl'}",
                     evals=[(start, asr if poisoned else 0.02, 2.5),
                            cleaned if poisoned else (start - 0.01, 0.02, 2.0)],
                     objective=(1.0, 1.0), source=source, defense="cleanclip", seed=seed, model=model)


def _study(root):
    # The small model: cleaning costs both objectives the same. The large one: MMCL+SSL pays 8-10 points
    # more, or (seed 1) never gets under the bound.
    for seed in (0, 1):
        _scale(root, "big-clip", 30_000_000, seed, mmcl=-0.01, ssl=[-0.10, None][seed])
        _scale(root, "small-clip", 1_000_000, seed, mmcl=-0.03, ssl=-0.03, asr=0.85, start=0.4)


def test_architectures_are_never_pooled(tmp_path):
    _study(tmp_path)
    runs = collect_runs(tmp_path)
    assert scales(runs) == ["small-clip", "big-clip"]  # by parameter count, not by name
    groups = analyse(runs)
    assert sorted((g.model, g.objective, len(g.seeds)) for g in groups) == [
        ("big-clip", "MMCL", 2), ("big-clip", "MMCL+SSL", 2), ("small-clip", "MMCL", 2), ("small-clip", "MMCL+SSL", 2)]
    # Each control is its own architecture's: a pooled control would give the small model's start accuracy.
    big = next(g for g in groups if g.model == "big-clip" and g.objective == "MMCL")
    assert [s.control_start["zeroshot_top1"] for s in big.seeds] == [0.6, 0.6]


def test_one_point_per_architecture_with_the_gap_per_seed(tmp_path):
    _study(tmp_path)
    runs = collect_runs(tmp_path)
    small, big = scale_points(analyse(runs), runs)
    assert (small.model, small.parameters) == ("small-clip", 1_000_000)
    assert (big.model, big.parameters) == ("big-clip", 30_000_000)
    assert [round(g, 4) for g in small.gaps] == [0.0, 0.0]
    assert math.isclose(big.gaps[0], 0.09) and math.isinf(big.gaps[1])
    assert [t.met for t in small.targets] == [False, False, False]  # ASR 85%, MMCL costs 2 points net, no gap
    assert [t.met for t in big.targets] == [True, True, True]
    headers, rows = scale_table([small, big])
    assert rows[1][headers.index("gap (MMCL+SSL's extra drop, points)")] == "9.0 (+1 seed: MMCL+SSL never reached)"
    assert rows[1][headers.index("MMCL+SSL net Δacc @ASR≤10% per seed")] == "-9.0, never"  # net of -1 control
    assert rows[0][headers.index("MMCL net Δacc @ASR≤10% per seed")] == "-2.0, -2.0"
    assert rows[0][headers.index("parameters")] == "1.0M"
    text = scale_verdict([small, big])
    # A difference is worded with its direction, never as a bare sign ("exceeds by -1.5").
    assert "MMCL+SSL's net accuracy drop at ASR ≤ 10% is the same as MMCL's (± 0.0 over seeds)" in text
    assert "is 9.0 points larger than MMCL's (1 more seed(s) where MMCL+SSL never got there)" in text
    # Each architecture's ASR after cleaning, per learning rate: only the large one's MMCL+SSL backdoor lasts.
    assert "more slowly than the MMCL one at 0 of 1 cleaning learning rates" in text.split("\n\n")[0]
    assert "lr 0.001: 5.0% against 27.5% after 1 epoch" in text.split("\n\n")[1]
    assert text.endswith("All three targets (the paper's headline) are met at: big-clip.")


def test_the_report_of_several_architectures(tmp_path):
    _study(tmp_path / "runs")
    report = write_report(tmp_path / "runs", tmp_path / "out")
    out = tmp_path / "out"
    for model in ("small-clip", "big-clip"):  # a whole report per architecture
        assert (out / "scales" / model / "report.html").is_file()
        assert (out / "scales" / model / "plots" / "tradeoff.png").is_file()
    assert (out / "plots" / "scale.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert summary.index("The headline against scale") < summary.index("## small-clip") < summary.index("## big-clip")
    page = (out / "report.html").read_text()
    assert "scales/big-clip/report.html" in page and "met at: big-clip" in page
    models = {row.split(",")[0] for row in (out / "summary.csv").read_text().splitlines()[1:]}
    assert models == {"small-clip", "big-clip"}
    assert report.headline.startswith("model ") and "big-clip:" in report.headline


def test_one_architecture_keeps_the_single_report(tmp_path):
    _scale(tmp_path, "big-clip", 30_000_000, 0, mmcl=-0.01, ssl=-0.10)
    write_report(tmp_path)
    assert not (tmp_path / "scales").exists() and not (tmp_path / "plots" / "scale.png").exists()
    assert "The paper's headline" in (tmp_path / "summary.md").read_text()


def test_runs_that_logged_no_size_are_placed_by_name(tmp_path):
    for model in ("a-clip", "b-clip"):
        _scale(tmp_path, model, None, 0, mmcl=-0.01, ssl=-0.05)
    runs = collect_runs(tmp_path)
    points = scale_points(analyse(runs), runs)
    assert [p.model for p in points] == ["a-clip", "b-clip"] and all(p.parameters is None for p in points)
    write_report(tmp_path)
    assert (tmp_path / "plots" / "scale.png").is_file()
