"""`clipbackdoor sweep`, `report`, `demo` and `list sweeps` from the command line: what a user types first."""

import re

import pytest
import yaml

from clipbackdoor.cli import main

SHIPPED = ("attacks", "demo", "demo-quick", "demo-poisoned-cleaning", "paper-mini", "paper-cc3m-cleaning",
           "paper-cc6m-cleaning", "study-capacity", "study-headline", "study-length", "study-cleaning", "study-task", "study-scale", "headline",
           "defenses", "paper-heavy-l2")

# MMCL-only pre-training (no WordNet needed) and cleaning of 256 / 128 pairs: about 2 s a run.
TINY = {"data.train.num_samples": 256, "data.eval.num_samples": 100, "train.batch_size": 64,
        "train.warmup_steps": 1, "eval.batch_size": 100, "model.name": "tiny-clip"}


def tiny_spec():
    return {
        "workers": 2,
        "stages": {
            "pre": {"command": "pretrain", "config": "mmcl",
                    "set": {**TINY, "train.epochs": 1, "train.keep_epoch_checkpoints": False},
                    "grid": {"poison.budget": {"poisoned": 0.1, "control": 0}}},
            "clean": {"command": "clean", "from": "pre",
                      "set": {"data.train.num_samples": 128, "train.batch_size": 64, "train.epochs": 1,
                              "eval.batch_size": 100, "train.keep_last_state": False,
                              "data.validation": {"name": "synthetic", "split": "val", "num_samples": 64}},
                      "grid": {"defense.name": ["mmcl"]}},
        },
    }


def assert_one_line_error(err, *fragments):
    # A user error is one line naming the problem; a traceback would bury it.
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_sweeps_names_the_shipped_sweeps(capsys):
    assert main(["list", "sweeps", "--names"]) == 0
    assert set(capsys.readouterr().out.split()) == set(SHIPPED)
    assert main(["list", "sweeps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweeps:"
    # Every shipped sweep on its own line, with its description's first sentence beside it.
    assert {line.split()[0] for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")} \
        == set(SHIPPED)
    assert any("every registered defense" in line for line in lines)


def test_dry_run_lists_every_run_and_trains_nothing(tmp_path, capsys):
    # The dry run is how a user checks a sweep before spending minutes on it: it must show all 28 runs of
    # the demo and leave nothing behind that a later real run would mistake for progress.
    out = tmp_path / "sweep"
    assert main(["sweep", "demo", "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 28
    pretrain = [line for line in lines if line.startswith("pretrain/")]
    clean = [line for line in lines if line.startswith("clean/")]
    assert len(pretrain) == 4 and len(clean) == 24
    # Each cleaning run names the model it cleans; each pre-trained model is cleaned 6 ways.
    sources = [re.search(r"\(cleans (\S+)\)", line).group(1) for line in clean]
    assert sorted(set(sources)) == sorted(line.split(":")[0] for line in pretrain)
    assert all(sources.count(s) == 6 for s in set(sources))
    assert not out.exists() or not any(out.rglob("config.yaml"))


def test_malformed_spec_is_a_one_line_error(tmp_path, capsys):
    spec = tiny_spec()
    spec["stages"]["clean"]["grdi"] = spec["stages"]["clean"].pop("grid")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys.readouterr().err, "sweep", "stages.clean", "grdi")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_an_unknown_key_in_a_grid_is_one_error_before_any_run(tmp_path, capsys, dry_run):
    spec = tiny_spec()
    spec["stages"]["clean"]["grid"]["train.lrr"] = [1e-3]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), *dry_run]) == 2
    assert_one_line_error(capsys.readouterr().err, "sweep run clean/poisoned/mmcl_lrr-0.001",
                          "unknown config key(s) train.lrr")
    assert not (tmp_path / "out").exists()


def test_unknown_sweep_name_lists_the_shipped_ones(tmp_path, capsys):
    # A mistyped shipped name must not be read as a (missing) file path without saying what exists.
    assert main(["sweep", "dmeo", "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert_one_line_error(capsys.readouterr().err, "dmeo", *SHIPPED)


def test_report_on_a_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "no run directories")
    assert not (tmp_path / "report.html").exists()


def test_unknown_demo_preset_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--preset", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_quick_and_preset_are_exclusive(tmp_path, capsys):
    # Both set the same option; silently letting the later one win would run a 25-minute preset by mistake.
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--quick", "--preset", "paper-mini", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_tiny_sweep_with_report(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(), sort_keys=False))  # stages run in file order
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2", "--report"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "failed:" not in printed
    for name in ("pre/poisoned", "pre/control", "clean/poisoned/mmcl", "clean/control/mmcl"):
        assert (out / name / "summary.json").is_file(), name
    for name in ("report.html", "results.csv", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "pareto.png", "pretraining.png", "tradeoff.png", "trajectories.png"]
    # The results index holds every evaluation (before training and after the one epoch) of all 4 runs.
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 4 * 2
