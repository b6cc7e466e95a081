"""Experiment loggers (train.report_to): TensorBoard and wandb receive what metrics.jsonl holds, a resumed
run continues the same log without duplicate steps, and a wrong name or a missing package is one line."""

import sys

import numpy as np
import pytest
from interrupt import train_until_interrupted
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clipbackdoor.cli import main
from clipbackdoor.config import load_config
from clipbackdoor.errors import ConfigError
from clipbackdoor.io import read_jsonl
from clipbackdoor.rundir import RunDir
from clipbackdoor.train.loggers import numeric_fields
from clipbackdoor.train.loop import run_training
from clipbackdoor.train.run import check_components

TINY = [
    "data.train.num_samples=256", "data.eval.num_samples=64", "train.batch_size=64", "train.epochs=2",
    "train.warmup_steps=2", "train.log_every=1", "train.progress=false", "train.threads=1",
    "poison.budget=0.1", "attack.patch_size=4", "eval.batch_size=64",
]


def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


def _expected(run_dir):
    """{tag: [(step, value)]} from metrics.jsonl, as float32 (TensorBoard's scalar type)."""
    out = {}
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        for tag, value in numeric_fields(record).items():
            out.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return out


def _tensorboard(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return scalars, acc


def test_tensorboard_holds_every_numeric_field_of_metrics_jsonl(tmp_path):
    run_training(_cfg("train.report_to=[tensorboard]"), tmp_path)
    scalars, acc = _tensorboard(tmp_path)
    expected = _expected(tmp_path)
    assert scalars == expected
    for tag in ("eval/asr_top1", "eval/zeroshot_top1", "train/loss", "train/lr", "epoch/train_loss", "data/rows"):
        assert tag in scalars
    assert [step for step, _ in scalars["eval/asr_top1"]] == [0, 4, 8]  # epoch 0 is step 0
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))
    # The resolved config, as text.
    assert "config/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:" in text and "num_samples: 256" in text


def test_a_resumed_run_continues_the_tensorboard_log_without_duplicate_steps(tmp_path, monkeypatch):
    cfg = _cfg("train.report_to=tensorboard")
    train_until_interrupted(monkeypatch, cfg, tmp_path, step=7)
    before, _ = _tensorboard(tmp_path)
    assert [step for step, _ in before["train/loss"]] == list(range(1, 7))
    run_training(cfg, tmp_path)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per session
    scalars, _ = _tensorboard(tmp_path)
    # The purge step makes TensorBoard drop what the interrupted session logged after its checkpoint;
    # the timing fields differ between sessions, so a point kept twice would show.
    assert scalars == _expected(tmp_path)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))


def test_a_logger_added_when_the_run_resumes_gets_the_records_before(tmp_path, monkeypatch):
    train_until_interrupted(monkeypatch, _cfg(), tmp_path, step=7)
    assert not (tmp_path / "tensorboard").exists()
    run_training(_cfg("train.report_to=tensorboard"), tmp_path)  # an execution key: the same run
    scalars, _ = _tensorboard(tmp_path)
    assert scalars == _expected(tmp_path)
    assert [step for step, _ in scalars["eval/asr_top1"]] == [0, 4, 8]


@pytest.fixture
def wandb_spy(tmp_path, monkeypatch):
    """wandb offline and quiet, with its global files in tmp_path; records wandb.init's arguments and
    every run.log call."""
    wandb = pytest.importorskip("wandb")
    from wandb.sdk.wandb_run import Run

    for key, value in {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": tmp_path / "wb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wb-cache", "WANDB_DATA_DIR": tmp_path / "wb-data"}.items():
        monkeypatch.setenv(key, str(value))
    calls = {"init": [], "log": []}
    real_init, real_log = wandb.init, Run.log

    def init(**kwargs):
        calls["init"].append(kwargs)
        return real_init(**kwargs)

    def log(self, data, step=None, commit=None):
        calls["log"].append((step, dict(data)))
        return real_log(self, data, step=step, commit=commit)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(Run, "log", log)
    return calls


def test_wandb_offline_run_is_continued_on_resume(tmp_path, monkeypatch, wandb_spy):
    run_dir = tmp_path / "run"
    cfg = _cfg("train.report_to=wandb", "train.wandb.mode=offline", "train.wandb.tags=a,b")
    train_until_interrupted(monkeypatch, cfg, run_dir, step=7)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert len(wandb_spy["init"]) == 1
    first_session = len(wandb_spy["log"])
    run_training(cfg, run_dir)

    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith("-" + run_id) for name in offline)
    assert all((run_dir / "wandb" / name / f"run-{run_id}.wandb").is_file() for name in offline)
    first, second = wandb_spy["init"]
    for kwargs in (first, second):
        assert kwargs["id"] == run_id and kwargs["resume"] == "allow" and kwargs["mode"] == "offline"
        assert kwargs["dir"] == str(run_dir) and kwargs["name"] == "run" and kwargs["tags"] == ["a", "b"]
        assert kwargs["config"]["train"]["report_to"] == ["wandb"]
    assert [step for step, data in wandb_spy["log"][:first_session] if "train/loss" in data] == list(range(1, 7))
    # The resumed session logs every record metrics.jsonl gained after the step-4 checkpoint, at its step.
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > 4]
    assert wandb_spy["log"][first_session:] == [(r["step"], numeric_fields(r)) for r in records]
    assert ("eval/asr_top1" in wandb_spy["log"][-1][1]) and wandb_spy["log"][-1][0] == 8


def test_report_to_takes_a_comma_list_or_a_yaml_list_and_is_an_execution_key(tmp_path):
    assert _cfg("train.report_to=tensorboard, wandb").train.report_to == ["tensorboard", "wandb"]
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  report_to: [wandb]\n  wandb: {project: p, mode: disabled}\n")
    cfg = load_config(config, [])
    assert cfg.train.report_to == ["wandb"] and cfg.train.wandb.project == "p"
    assert load_config(None, []).train.report_to == []
    run = RunDir(tmp_path / "run")
    run.write_config(load_config(None, []))
    assert run.config_differences(cfg) == []
    assert run.config_differences(load_config(None, ["train.lr=1"])) != []  # not vacuous


@pytest.mark.parametrize("override, message", [
    ("train.report_to=tensorbord", "train.report_to: unknown logger 'tensorbord' (did you mean 'tensorboard'?); "
                                   "choose from: tensorboard, wandb"),
    ("train.report_to={a: 1}", "train.report_to: expected a list of names (a,b or [a, b]), got {'a': 1}"),
    ("train.wandb.mode=online2", "train.wandb.mode: must be online, offline or disabled, got 'online2'"),
])
def test_bad_report_to_values_are_one_line_errors(override, message):
    # Logger names are checked with the other registered names, before a run or a sweep starts.
    with pytest.raises(ConfigError) as err:
        check_components(_cfg(override))
    assert str(err.value) == message


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_unknown_logger_is_one_line(tmp_path, capsys):
    err = _one_line_error(capsys, ["pretrain", "--out", str(tmp_path), "--report-to", "tensorboard,wandd", *TINY])
    assert "train.report_to: unknown logger 'wandd' (did you mean 'wandb'?)" in err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_cli_missing_logger_package_says_how_to_install_it(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    err = _one_line_error(capsys, ["pretrain", "--out", str(tmp_path), *TINY, f"train.report_to={name}"])
    assert f"train.report_to: {name} needs the {name} package" in err
    assert f"pip install 'clipbackdoor[{name}]'" in err
    assert not (tmp_path / "checkpoints").exists()  # said before any training
