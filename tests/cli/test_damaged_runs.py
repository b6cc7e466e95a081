"""What a user sees when a run directory was damaged, tampered with, or left by a failed start: one line
naming the file, never a traceback, and never a file's code run."""

import shutil

import pytest

from clipbackdoor.cli import main

TINY = ["model.name=tiny-vit", "data.train.num_samples=128", "data.eval.num_samples=40", "train.batch_size=64",
        "train.epochs=1", "train.progress=false", "eval.batch_size=40", "poison.budget=0.1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["pretrain", "--out", str(run), *TINY]) == 0
    return run


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clipbackdoor {command}: error: "), err
    return err[0]


@pytest.mark.parametrize("command", ["evaluate", "clean", "pretrain"])
def test_a_config_yaml_with_a_python_tag_is_refused_in_one_line_and_never_run(finished, tmp_path, capsys,
                                                                             monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "config.yaml").write_text('seed: !!python/object/apply:os.system ["touch PWNED"]\n')
    argv = {"evaluate": ["evaluate", "--checkpoint", str(run)],
            "clean": ["clean", "--from", str(run), "--out", str(tmp_path / "clean"), *TINY],
            "pretrain": ["pretrain", "--out", str(run), *TINY]}[command]
    assert main(argv) == 2
    line = one_line_error(capsys, command)
    assert f"{run / 'config.yaml'}: invalid YAML: line 1, column 7" in line and "never run" in line
    assert not (tmp_path / "PWNED").exists()


def test_report_skips_and_counts_a_damaged_metrics_line(finished, tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    shutil.copytree(finished, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], '{"kind": "eval", "ep', *lines[1:]]) + "\n")
    assert main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "left out of the report (1" in out and "metrics.jsonl: skipped 1 unreadable line(s)" in out


def test_the_corrected_command_takes_over_the_directory_of_a_run_that_failed_on_its_config(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["pretrain", "--out", out, *TINY, "attack.patchsize=4"]) == 2
    assert "unknown key(s) 'patchsize'" in one_line_error(capsys, "pretrain")
    assert main(["pretrain", "--out", out, *TINY, "attack.patch_size=4"]) == 0
    # Once it has a checkpoint, the directory belongs to that run.
    assert main(["pretrain", "--out", out, *TINY, "attack.patch_size=5"]) == 2
    assert "already holds a run with a different config (attack.patch_size: 4 -> 5)" in one_line_error(capsys, "pretrain")
