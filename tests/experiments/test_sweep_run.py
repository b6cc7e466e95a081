"""Running sweeps: every run once, resumable after a kill, failures isolated and reported."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from clipbackdoor.experiments.sweep import _duration, _Estimate, expand, parse_spec, run_sweep
from clipbackdoor.io import read_jsonl
from clipbackdoor.registry import ConfigError
from clipbackdoor.reporting.collect import INDEX_NAME, write_index

# MMCL-only pre-training and cleaning need no WordNet and run in about 2 s each.
TINY = {"data.train.num_samples": 256, "data.eval.num_samples": 100, "train.batch_size": 64,
        "train.warmup_steps": 1, "eval.batch_size": 100, "model.name": "tiny-clip"}


def tiny_spec(epochs=2, clean_epochs=2, poison=(0.1, 0)):
    return {
        "workers": 2,
        "stages": {
            "pre": {"command": "pretrain", "config": "mmcl",
                    "set": {**TINY, "train.epochs": epochs, "train.keep_epoch_checkpoints": False},
                    "grid": {"poison.budget": dict(zip(["poisoned", "control"], poison))}},
            "clean": {"command": "clean", "from": "pre",
                      "set": {"data.train.num_samples": 128, "train.batch_size": 64, "train.epochs": clean_epochs,
                              "eval.batch_size": 100, "train.keep_last_state": False,
                              "train.keep_epoch_checkpoints": False,
                              "data.validation": {"name": "synthetic", "split": "val", "num_samples": 64}},
                      "grid": {"defense.name": ["mmcl"], "train.lr": [1e-3, 3e-3]}},
        },
    }


def check_every_run_once(out, spec):
    jobs = expand(parse_spec(spec))
    index = [line.split(",")[0] for line in (out / INDEX_NAME).read_text().splitlines()[1:]]
    for job in jobs:
        run = out / job.name
        assert (run / "summary.json").is_file(), job.name
        epochs = [r["epoch"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"]
        expected = spec["stages"][job.stage]["set"]["train.epochs"]
        # Every evaluation exactly once, in order: nothing lost, nothing counted twice.
        assert epochs == list(range(expected + 1)), (job.name, epochs)
        assert index.count(job.name) == expected + 1
    assert len(index) == sum(spec["stages"][j.stage]["set"]["train.epochs"] + 1 for j in jobs)


def test_sweep_runs_everything_then_skips_it(tmp_path):
    spec = tiny_spec()
    messages = []
    result = run_sweep(parse_spec(spec), tmp_path, echo=messages.append)
    assert result.ok and len(result.completed) == 6
    write_index(tmp_path)
    check_every_run_once(tmp_path, spec)
    # Cleaning runs logged the defender's signal, and kept only their final weights.
    clean_run = tmp_path / "clean" / "poisoned" / "mmcl_lr-0.001"
    assert all("val_loss" in r for r in read_jsonl(clean_run / "metrics.jsonl") if r["kind"] == "eval")
    assert sorted(p.name for p in (clean_run / "checkpoints").iterdir()) == ["epoch_2.safetensors"]
    assert any("done    clean/control/mmcl_lr-0.003" in m for m in messages)

    again = run_sweep(parse_spec(spec), tmp_path, echo=messages.append)
    assert again.completed == [] and len(again.skipped) == 6


def test_a_failing_run_is_reported_and_blocks_only_its_dependents(tmp_path):
    spec = tiny_spec()
    # Weights that are not there make one pre-training fail as it starts (impossible values and unknown
    # keys stop the whole sweep before any run; files are only looked at by the run that reads them).
    spec["stages"]["pre"]["grid"] = {"model.pretrained": {"bad": str(tmp_path / "missing.safetensors"), "ok": None}}
    result = run_sweep(parse_spec(spec), tmp_path, echo=lambda m: None)
    assert set(result.failed) == {"pre/bad"}
    assert "model.pretrained" in result.failed["pre/bad"]
    assert sorted(result.blocked) == ["clean/bad/mmcl_lr-0.001", "clean/bad/mmcl_lr-0.003"]
    assert sorted(result.completed) == ["clean/ok/mmcl_lr-0.001", "clean/ok/mmcl_lr-0.003", "pre/ok"]


def test_killed_sweep_completes_with_every_run_exactly_once(tmp_path):
    """Kill the sweep process (SIGKILL, no clean-up) while runs are in flight, then run it again."""
    spec = tiny_spec(epochs=4, clean_epochs=3)
    spec["stages"]["pre"]["set"]["train.checkpoint_every_steps"] = 2
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "clipbackdoor", "sweep", str(spec_path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        # Wait until one run has finished and another is part-way through its evaluations.
        while time.time() < deadline:
            done = list(out.glob("**/summary.json"))
            partial = [m for m in out.glob("clean/**/metrics.jsonl") if not (m.parent / "summary.json").exists()
                       and any(r["kind"] == "eval" and r["epoch"] >= 1 for r in read_jsonl(m))]
            if done and partial:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached a mid-run state")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The workers die with the sweep (PR_SET_PDEATHSIG); give the kernel a moment.
    time.sleep(0.5)
    result = run_sweep(parse_spec(spec), out, echo=lambda m: None)
    assert result.ok and result.skipped, "some runs must have survived the kill as complete"
    write_index(out)
    check_every_run_once(out, spec)


def test_devices_pin_one_run_to_each_listed_device(tmp_path):
    # "--devices cuda:0,cuda:1" on a GPU node; "cpu" twice stands in here. A device goes back to the
    # pool when its run ends, so the cleaning runs reuse them.
    spec = tiny_spec(epochs=1, clean_epochs=1)
    messages = []
    result = run_sweep(parse_spec(spec), tmp_path, devices=["cpu", "cpu"], echo=messages.append)
    assert result.ok and len(result.completed) == 6
    starts = [m for m in messages if m.strip().startswith("start")]
    assert len(starts) == 6 and all(m.endswith(" on cpu") for m in starts)
    assert "on 2 worker(s)" in messages[0]
    with pytest.raises(Exception, match="disagree"):
        run_sweep(parse_spec(spec), tmp_path / "x", workers=3, devices=["cpu"])


@pytest.mark.parametrize("stage, key, value, match", [
    ("pre", "set", {"attack.patchsize": 4}, r"sweep run pre/poisoned: attack \(badnet\): unknown key\(s\) 'patchsize'"),
    ("pre", "grid", {"train.lrr": [1e-3]}, r"sweep run pre/poisoned_lrr-0\.001: unknown config key\(s\) train\.lrr"),
    ("clean", "set", {"defense.inmodal_wieght": 2}, r"sweep run clean/poisoned/mmcl_lr-0\.001: .*inmodal_wieght"),
    ("clean", "set", {"data.validation.nmae": "x"}, r"sweep run clean/poisoned/mmcl_lr-0\.001: .*data\.validation"),
], ids=["component-key", "config-key", "defense-key", "clean-dataset-key"])
def test_an_unknown_key_stops_the_sweep_before_any_run_starts(tmp_path, stage, key, value, match):
    spec = tiny_spec()
    spec["stages"][stage].setdefault(key, {}).update(value)
    with pytest.raises(ConfigError, match=match):
        run_sweep(parse_spec(spec), tmp_path / "out", echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_complete_run_made_with_another_config_stops_the_sweep(tmp_path, monkeypatch):
    # Edit the spec and run it again into the same folder: skipping the complete runs would report results
    # of the old spec as the new one's.
    spec = tiny_spec(epochs=1, clean_epochs=1)
    assert run_sweep(parse_spec(spec), tmp_path / "out", echo=lambda _: None).ok
    monkeypatch.chdir(tmp_path)  # the same folder spelled another way is the same sweep
    assert len(run_sweep(parse_spec(spec), "out", echo=lambda _: None).skipped) == 6
    spec["stages"]["clean"]["set"]["train.weight_decay"] = 0.5
    with pytest.raises(ConfigError, match=r"sweep run clean/poisoned/mmcl_lr-0\.001 is complete but was made with "
                                          r"another config \(train\.weight_decay: 0\.1 -> 0\.5\)"):
        run_sweep(parse_spec(spec), tmp_path / "out", echo=lambda _: None)


# The live status: runs done, running and waiting, and an estimate of the time left.

def test_nothing_can_be_estimated_before_an_epoch():
    left, untimed = _Estimate(workers=2).seconds_left([("pre", 5.0, 0, 10)], ["pre", "clean"])
    assert (left, untimed) == (0.0, 3)


def test_a_running_run_projects_its_own_length_and_its_stage():
    # 2 of 10 epochs in 20 s: 80 s left for it, and a waiting run of its stage is guessed at 100 s.
    left, untimed = _Estimate(workers=1).seconds_left([("pre", 20.0, 2, 10)], ["pre"])
    assert untimed == 0 and left == pytest.approx(180.0)


def test_finished_runs_time_their_stage_and_workers_share_the_rest():
    eta = _Estimate(workers=2)
    eta.finished("clean", 30.0)
    eta.finished("clean", 50.0)
    left, untimed = eta.seconds_left([], ["clean"] * 4)
    assert untimed == 0 and left == pytest.approx(4 * 40.0 / 2)
    # One long run cannot be shared: the estimate is never below it.
    left, _ = eta.seconds_left([("pre", 10.0, 1, 100)], [])
    assert left == pytest.approx(990.0)


def test_runs_of_an_untimed_stage_are_counted_not_guessed():
    left, untimed = _Estimate(workers=1).seconds_left([("pre", 20.0, 2, 10)], ["clean", "clean"])
    assert left == pytest.approx(80.0) and untimed == 2


@pytest.mark.parametrize(("seconds", "text"),
                         [(4, "4 s"), (89, "89 s"), (600, "10 min"), (3 * 3600 + 300, "3 h 05 min")])
def test_durations_read_like_a_person_would_say_them(seconds, text):
    assert _duration(seconds) == text


def test_a_sweep_prints_status_lines_with_the_time_left(tmp_path):
    messages = []
    assert run_sweep(parse_spec(tiny_spec(epochs=3)), tmp_path, echo=messages.append, status_seconds=0).ok
    status = [m.strip() for m in messages if "status:" in m]
    pattern = r"status: (\d)/6 done, (\d) running, (\d) waiting; (.*)"
    parsed = [re.fullmatch(pattern, line) for line in status]
    assert all(parsed), status
    # Every run is done, running or waiting, in every line.
    assert all(sum(int(m.group(i)) for i in (1, 2, 3)) == 6 for m in parsed)
    # Once the pre-training runs finished, the cleaning runs are timed by their first epochs or runs.
    assert any(m.group(4).startswith("about ") and m.group(4).endswith(" left") for m in parsed)
    # Running runs show their epoch out of the run's epochs.
    assert any(re.fullmatch(r"pre/(poisoned|control) epoch [123]/3: acc .*", m.strip()) for m in messages)
    # No line per epoch outside the status lines.
    assert not any(re.search(r"^\s*\S+ epoch \d+:", m) for m in messages)
