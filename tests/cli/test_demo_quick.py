"""`clipbackdoor demo --quick` end to end: the first command a new user runs must finish and show a report."""

import pytest

from clipbackdoor.cli import main
from clipbackdoor.experiments.sweep import expand, load_spec


@pytest.mark.slow
def test_quick_demo_runs_every_run_and_writes_the_report(tmp_path, capsys):
    # Two-plus minutes: the whole pipeline (poisoning, MMCL and MMCL+SSL pre-training, three defenses,
    # report) on the shipped quick preset, through the same entry point a user calls.
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "failed:" not in printed
    assert (out / "report.html").stat().st_size > 0
    runs = [job.name for job in expand(load_spec("demo-quick"))]
    assert len(runs) == 16  # 4 pre-trainings (2 objectives x poisoned/control) + 4 x 3 cleanings
    missing = [name for name in runs if not (out / name / "summary.json").is_file()]
    assert not missing, missing
