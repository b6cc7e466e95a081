"""Sweeps on Slurm without a cluster: the scripts `sweep --slurm` writes, their submission through a fake
`sbatch`, and `sweep --run NAME`, what every array task runs (also as two ranks of a faked srun step)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipbackdoor.cli import main
from clipbackdoor.experiments.jobs import RUN_LOCK, run_lock
from clipbackdoor.experiments.slurm import write_arrays
from clipbackdoor.experiments.spec import expand, load_spec, parse_spec
from clipbackdoor.experiments.sweep import run_sweep
from clipbackdoor.registry import ConfigError

# MMCL-only pre-training and cleaning on a few hundred pairs: about 2 s a run.
TINY = {"data.train.num_samples": 256, "data.eval.num_samples": 100, "train.batch_size": 64,
        "train.warmup_steps": 1, "eval.batch_size": 100, "model.name": "tiny-clip"}
ENV_OF_LAUNCHERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
                    "SLURM_NTASKS")


def tiny_spec(**slurm) -> dict:
    spec = {
        "threads": 1,
        "stages": {
            "pre": {"command": "pretrain", "config": "mmcl",
                    "set": {**TINY, "train.epochs": 1, "train.keep_epoch_checkpoints": False},
                    "grid": {"poison.budget": {"poisoned": 0.1, "control": 0}}},
            "clean": {"command": "clean", "from": "pre",
                      "set": {"data.train.num_samples": 128, "train.batch_size": 64, "train.epochs": 1,
                              "eval.batch_size": 100, "train.keep_last_state": False},
                      "grid": {"defense.name": ["mmcl", "ssl"]}},
        },
    }
    if slurm:
        spec["slurm"] = slurm
    return spec


def write_spec(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def no_launcher_env(monkeypatch):
    # The test process is one process, even when the suite itself runs inside a torchrun or srun job.
    for name in ENV_OF_LAUNCHERS:
        monkeypatch.delenv(name, raising=False)


def directives(script: Path) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.read_text().splitlines() if line.startswith("#SBATCH")]


def run_list(script: Path) -> list[str]:
    text = script.read_text()
    return text[text.index("runs=(\n") + 7:text.index("\n)\n")].split()


def bash_syntax_ok(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_dry_run_writes_one_array_per_stage_of_a_shipped_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p6"
    assert main(["sweep", "paper-cc6m-cleaning", "--out", str(out), "--slurm-dry-run",
                 "--partition", "gpu", "--time", "1-00:00:00"]) == 0
    printed = capsys.readouterr().out
    jobs = expand(load_spec("paper-cc6m-cleaning"))
    stages = list(dict.fromkeys(j.stage for j in jobs))
    scripts = sorted((out / "slurm").glob("*.sbatch"))
    assert sorted(p.stem for p in scripts) == sorted(stages)
    for stage in stages:
        script = out / "slurm" / f"{stage}.sbatch"
        runs = [j.name for j in jobs if j.stage == stage]
        # Array index i runs line i of the script's run list: every run of the stage, in order.
        assert run_list(script) == runs
        lines = directives(script)
        assert f"--array=0-{len(runs) - 1}" in lines
        assert "--partition=gpu" in lines and "--time=1-00:00:00" in lines
        assert f"--output={out}/slurm/logs/{stage}-%A_%a.out" in lines
        text = script.read_text()
        assert f'sweep paper-cc6m-cleaning --out {out} --run "$run"' in text
        assert f"cd {tmp_path}" in text  # where the spec's relative data paths resolve
        bash_syntax_ok(script)
    bash_syntax_ok(out / "slurm" / "submit.sh")
    # Each cleaning array waits for the whole array of the model it cleans.
    submit = (out / "slurm" / "submit.sh").read_text()
    assert re.search(r'ssl_of_mmcl_ssl_job=\$\(sbatch --parsable --dependency=afterok:"\$pretrain_mmcl_ssl_job" '
                     r"--kill-on-invalid-dep=yes \S+/ssl-of-mmcl-ssl.sbatch\)", submit)
    assert "pretrain_mmcl_job=$(sbatch --parsable " + str(out / "slurm" / "pretrain-mmcl.sbatch") + ")" in submit
    assert "nothing submitted" in printed and "20 run(s), after stage pretrain-mmcl" in printed
    # A dry run records no sweep and starts no run.
    assert not (out / "sweep.yaml").exists() and not list(out.rglob("config.yaml"))


def test_slurm_section_and_stage_overrides_become_sbatch_lines(tmp_path):
    spec = tiny_spec(partition="gpu", account="lab", qos="high", time="2-00:00:00", nodes=2, gpus_per_node=4,
                     mem="64G", max_parallel=3, constraint="a100", cpus_per_task=8,
                     setup=["module load cuda", "source .venv/bin/activate"],
                     extra=["--mail-type=END", "#SBATCH --exclusive"])
    spec["stages"]["clean"]["slurm"] = {"nodes": 1, "gpus_per_node": 1, "time": "4:00:00", "setup": "echo clean"}
    parsed = parse_spec(spec)
    arrays = write_arrays(parsed, expand(parsed), tmp_path / "out", spec_ref="/specs/tiny.yaml",
                          launcher="python -m clipbackdoor", workdir=tmp_path, overrides={"partition": "big"})
    pre, clean = (tmp_path / "out" / "slurm" / f"{s}.sbatch" for s in ("pre", "clean"))
    assert [a.script for a in arrays] == [pre, clean]
    assert directives(pre) == [
        "--job-name=out-pre", "--array=0-1%3", f"--output={tmp_path}/out/slurm/logs/pre-%A_%a.out",
        "--partition=big", "--account=lab", "--qos=high", "--time=2-00:00:00", "--constraint=a100",
        # One task per GPU: 2 nodes x 4 ranks.
        "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--mem=64G",
        "--mail-type=END", "--exclusive"]
    # The stage's keys replace the sweep's, the command line's replace both; the rest is inherited.
    assert directives(clean)[3:] == [
        "--partition=big", "--account=lab", "--qos=high", "--time=4:00:00", "--constraint=a100",
        "--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64G",
        "--mail-type=END", "--exclusive"]
    text = pre.read_text()
    # Setup runs in the working directory, before the run starts; the rendezvous address comes from Slurm.
    order = [text.index(s) for s in (f"cd {tmp_path}", "module load cuda", "source .venv/bin/activate",
                                     "export MASTER_ADDR=", "export MASTER_PORT=", "srun ")]
    assert order == sorted(order)
    assert "echo clean" in clean.read_text() and "module load" not in clean.read_text()
    assert 'srun --kill-on-bad-exit=1 python -m clipbackdoor sweep /specs/tiny.yaml --out ' in text
    assert "# Submitted with --dependency=afterok:<job id of stage pre>" in clean.read_text()
    for script in (pre, clean):
        bash_syntax_ok(script)


def test_complete_runs_are_left_out_of_the_arrays(tmp_path):
    parsed = parse_spec(tiny_spec())
    jobs = expand(parsed)
    out = tmp_path / "out"

    def arrays():
        return write_arrays(parsed, jobs, out, spec_ref="s", launcher="clipbackdoor", workdir=tmp_path)

    (out / "pre" / "poisoned").mkdir(parents=True)
    (out / "pre" / "poisoned" / "summary.json").write_text("{}")
    first = arrays()
    assert [(a.stage, a.runs, a.after) for a in first] == [
        ("pre", ["pre/control"], None),
        ("clean", ["clean/poisoned/mmcl", "clean/poisoned/ssl", "clean/control/mmcl", "clean/control/ssl"], "pre")]
    assert run_list(first[0].script) == ["pre/control"]
    # With every pre-training complete, the cleaning array waits for nothing.
    (out / "pre" / "control").mkdir(parents=True)
    (out / "pre" / "control" / "summary.json").write_text("{}")
    second = arrays()
    assert [(a.stage, a.after) for a in second] == [("clean", None)]
    assert not (out / "slurm" / "pre.sbatch").exists()
    submit = (out / "slurm" / "submit.sh").read_text()
    assert "pre_job" not in submit and "--dependency" not in submit


FAKE_SBATCH = """#!/bin/bash
# Records its arguments, one call a line, and answers like sbatch --parsable on a multi-cluster site.
echo "$*" >> {log}
n=$(grep -c . {log})
echo "$((1000 + n));cluster"
"""


def fake_sbatch(tmp_path: Path, monkeypatch, body: str = FAKE_SBATCH) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.calls"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(body.format(log=log))
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_submits_stages_in_order_with_the_dependency(tmp_path, capsys, monkeypatch):
    log = fake_sbatch(tmp_path, monkeypatch)
    spec = tiny_spec(gpus_per_node=1)
    out = tmp_path / "out"
    assert main(["sweep", str(write_spec(tmp_path, spec)), "--out", str(out), "--slurm"]) == 0
    calls = log.read_text().splitlines()
    assert calls == [f"--parsable {out}/slurm/pre.sbatch",
                     f"--parsable --dependency=afterok:1001 --kill-on-invalid-dep=yes {out}/slurm/clean.sbatch"]
    printed = capsys.readouterr().out
    assert "pre: job 1001, 2 run(s)" in printed and "clean: job 1002, 4 run(s) after job 1001" in printed
    # The spec copy records what was submitted, as a local sweep's does.
    assert yaml.safe_load((out / "sweep.yaml").read_text()) == spec


def test_a_refused_submission_is_one_line_naming_the_script_and_what_went_before(tmp_path, capsys, monkeypatch):
    fake_sbatch(tmp_path, monkeypatch, body=FAKE_SBATCH.replace(
        'echo "$((1000 + n));cluster"',
        'if [ "$n" = 2 ]; then echo "sbatch: error: invalid partition specified: gpux" >&2; exit 1; fi\n'
        'echo "$((1000 + n))"'))
    out = tmp_path / "out"
    assert main(["sweep", str(write_spec(tmp_path, tiny_spec())), "--out", str(out), "--slurm"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"sbatch {out}/slurm/clean.sbatch failed",
                          "invalid partition specified: gpux", "already submitted: pre 1001")


def test_slurm_without_sbatch_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["sweep", str(write_spec(tmp_path, tiny_spec())), "--out", str(tmp_path / "o"), "--slurm"]) == 2
    assert_one_line_error(capsys.readouterr().err, "sbatch: not found on PATH", "--slurm-dry-run")


def test_run_trains_one_run_then_finds_it_complete(tmp_path, capsys, no_launcher_env):
    spec_path, out = write_spec(tmp_path, tiny_spec()), tmp_path / "out"
    assert main(["sweep", str(spec_path), "--out", str(out), "--run", "pre/poisoned"]) == 0
    run = out / "pre" / "poisoned"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 1
    # That run only, through the real loop: its config, its log, every evaluation; nothing else started.
    assert [p.name for p in (out / "pre").iterdir()] == ["poisoned"]
    assert not (out / "clean").exists()
    assert "pre/poisoned finished" in capsys.readouterr().out
    assert (run / "log.txt").is_file() and (run / "config.yaml").is_file()
    written = (run / "summary.json").stat().st_mtime_ns
    assert main(["sweep", str(spec_path), "--out", str(out), "--run", "pre/poisoned"]) == 0
    assert "pre/poisoned is complete; nothing to do" in capsys.readouterr().out
    assert (run / "summary.json").stat().st_mtime_ns == written
    # A cleaning run whose model is not there yet is refused, not trained from nothing.
    assert main(["sweep", str(spec_path), "--out", str(out), "--run", "clean/control/mmcl"]) == 2
    assert_one_line_error(capsys.readouterr().err, "clean/control/mmcl", "cleans pre/control, which is not complete")


def test_run_of_an_unknown_name_suggests_the_closest(tmp_path, capsys):
    spec_path = write_spec(tmp_path, tiny_spec())
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "out"), "--run", "pre/poisned"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--run 'pre/poisned': no such run", "did you mean 'pre/poisoned'")
    assert not (tmp_path / "out").exists()


def test_a_run_being_trained_elsewhere_is_not_trained_again(tmp_path, capsys, no_launcher_env):
    spec_path, out = write_spec(tmp_path, tiny_spec()), tmp_path / "out"
    with run_lock(out / "pre" / "control"):  # another array task, or a local sweep's worker
        assert main(["sweep", str(spec_path), "--out", str(out), "--run", "pre/control"]) == 2
        assert_one_line_error(capsys.readouterr().err, "being trained by another process", RUN_LOCK)
        # A local sweep's worker respects the same lock.
        one_run = tiny_spec()
        one_run["stages"] = {"pre": one_run["stages"]["pre"]}
        one_run["stages"]["pre"]["grid"] = {"poison.budget": {"control": 0}}
        result = run_sweep(parse_spec(one_run), out, echo=lambda m: None)
        assert "being trained by another process" in result.failed["pre/control"]
    assert not (out / "pre" / "control" / "summary.json").exists()


@pytest.mark.parametrize("slurm, message", [
    ({"gpus": 4}, "sweep.slurm.gpus: unknown Slurm setting (did you mean 'gpus_per_node'?)"),
    ({"partiton": "gpu"}, "sweep.slurm.partiton: unknown Slurm setting (did you mean 'partition'?)"),
    ({"time": 86400}, "sweep.slurm.time: give the time limit as a quoted string"),
    ({"time": "24h"}, "sweep.slurm.time: expected a Slurm time"),
    ({"nodes": 0}, "sweep.slurm.nodes: expected an integer >= 1, got 0"),
    ({"gpus_per_node": True}, "sweep.slurm.gpus_per_node: expected an integer >= 0"),
    ({"mem": "lots"}, "sweep.slurm.mem: expected a size"),
    ({"partition": "gpu a100"}, "sweep.slurm.partition: expected a name without spaces"),
    ({"extra": ["mail-type=END"]}, "sweep.slurm.extra: each entry is an sbatch option"),
    ({"setup": [1]}, "sweep.slurm.setup: expected a list of strings"),
    (["partition=gpu"], "sweep.slurm: expected a mapping"),
])
def test_bad_slurm_settings_name_the_key(slurm, message):
    with pytest.raises(ConfigError) as err:
        parse_spec({**tiny_spec(), "slurm": slurm})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_slurm_settings_of_a_stage_and_the_command_line_are_one_line(tmp_path, capsys):
    spec = tiny_spec()
    spec["stages"]["clean"]["slurm"] = {"cpus_per_task": 0}
    assert main(["sweep", str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "o"), "--slurm-dry-run"]) == 2
    assert_one_line_error(capsys.readouterr().err, "stages.clean.slurm.cpus_per_task: expected an integer >= 1")
    spec_path = write_spec(tmp_path, tiny_spec())
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "o"), "--slurm-dry-run", "--time", "1:5:00:00"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--time: expected a Slurm time")


@pytest.mark.parametrize("flags, message", [
    (["--slurm", "--workers", "2"], "--workers does not go with --slurm"),
    (["--slurm", "--report"], "clipbackdoor report OUT"),
    (["--run", "pre/control", "--devices", "cpu"], "--devices does not go with --run"),
    (["--run", "pre/control", "--slurm"], "--slurm does not go with --run"),
    (["--partition", "gpu"], "--partition is a Slurm setting"),
])
def test_options_of_another_mode_are_refused(tmp_path, capsys, flags, message):
    spec_path = write_spec(tmp_path, tiny_spec())
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "o"), *flags]) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "o").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _srun_task(argv: list[str], env: dict[str, str], log: str) -> None:
    """Body of one faked srun task (a forked copy of this process, so torch is not imported twice more)."""
    os.environ.update(env)
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        sys.stdout = sys.stderr = handle
        code = main(argv)
        handle.flush()
    os._exit(code)


def test_run_as_two_ranks_of_an_srun_step(tmp_path, no_launcher_env):
    """What `srun --ntasks 2 ... --run NAME` starts: two processes that know their place only from Slurm's
    variables (no RANK/WORLD_SIZE) and meet at the MASTER_ADDR/MASTER_PORT the script exports."""
    spec_path, out = write_spec(tmp_path, tiny_spec()), tmp_path / "out"
    step = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port())}
    argv = ["sweep", str(spec_path), "--out", str(out), "--run", "pre/poisoned"]
    logs = [str(tmp_path / f"rank{r}.log") for r in range(2)]
    ctx = multiprocessing.get_context("fork")
    ranks = [ctx.Process(target=_srun_task, args=(argv, {**step, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                                                  logs[r])) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(120)
    outputs = [Path(log).read_text() for log in logs]
    assert [p.exitcode for p in ranks] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    summary = json.loads((out / "pre" / "poisoned" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "complete"
    # Rank 0 alone reports; rank 1 trained quietly beside it.
    assert "pre/poisoned finished" in outputs[0] and "finished" not in outputs[1]
