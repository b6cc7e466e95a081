"""The per-configuration cleaning table: each learning rate (or budget, or weight) on its own."""

from run_dirs import make_run

from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.report import write_report
from clipbackdoor.reporting.tables import config_table


def _cleaned(root, seed, configs):
    """An MMCL model of one seed and its control, each cleaned by CleanCLIP in every configuration of
    ``configs`` (name -> (lr, [(acc, asr) per epoch of the poisoned model's run])); controls lose 1 point."""
    make_run(root, f"pre/p-s{seed}", evals=[(0.1, 0.0, None), (0.6, 0.95, None)], poison=0.1, seed=seed)
    make_run(root, f"pre/c-s{seed}", evals=[(0.1, 0.0, None), (0.6, 0.02, None)], seed=seed)
    for name, (lr, epochs) in configs.items():
        make_run(root, f"clean/p-s{seed}/{name}", evals=[(0.6, 0.95, 2.5), *((a, r, 2.0) for a, r in epochs)],
                 objective=(1.0, 1.0), source=f"pre/p-s{seed}", defense="cleanclip", lr=lr, seed=seed)
        make_run(root, f"clean/c-s{seed}/{name}", evals=[(0.6, 0.02, 2.5), *((0.59, 0.02, 2.0) for _ in epochs)],
                 objective=(1.0, 1.0), source=f"pre/c-s{seed}", defense="cleanclip", lr=lr, seed=seed)


def test_each_configuration_is_summarised_over_seeds(tmp_path):
    for seed in (0, 1):
        _cleaned(tmp_path, seed, {"slow": (1e-4, [(0.6, 0.8), (0.6, 0.5 + 0.1 * seed)]),
                                  "fast": (1e-3, [(0.57, 0.2), (0.55, 0.04)])})
    headers, rows = config_table(analyse(collect_runs(tmp_path)))
    table = {row[2]: dict(zip(headers, row)) for row in rows}
    assert list(table) == ["slow", "fast"]  # by learning rate
    slow, fast = table["slow"], table["fast"]
    assert slow["ASR after the last epoch"] == "55.0 ± 7.1" and slow["best acc @ASR≤10%"] == "not reached"
    assert fast["seeds"] == "2" and fast["lowest ASR"] == "4.0 ± 0.0"
    assert fast["best acc @ASR≤10%"] == "55.0 ± 0.0 (2/2 seeds)"
    assert fast["Δacc"] == "-5.0 ± 0.0" and fast["control Δacc"] == "-1.0 ± 0.0"
    write_report(tmp_path)
    assert "## Cleaning, per configuration" in (tmp_path / "summary.md").read_text()


def test_no_table_when_every_model_was_cleaned_one_way(tmp_path):
    _cleaned(tmp_path, 0, {"only": (1e-3, [(0.57, 0.04)])})
    assert config_table(analyse(collect_runs(tmp_path)))[1] == []
    write_report(tmp_path)
    assert "per configuration" not in (tmp_path / "summary.md").read_text()


def test_run_settings_leave_out_keys_a_run_does_not_set():
    from pathlib import Path

    from clipbackdoor.reporting.collect import RunInfo
    from clipbackdoor.reporting.labels import run_settings

    run = RunInfo("clean/a", Path("a"), {}, "clean", "MMCL+SSL", "cleanclip", 0, [], True, lr=3e-3,
                  params={"train.lr": 3e-3, "defense.inmodal_weight": None, "train.epochs": 6})
    assert run_settings(run) == "lr 0.003, epochs 6"
