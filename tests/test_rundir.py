"""Run directories: reading a damaged or hostile config.yaml or summary.json, and taking over a directory
whose run never started."""

import json

import pytest
import torch

from clipbackdoor.config import load_config
from clipbackdoor.errors import DataError
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import RunDir
from clipbackdoor.train.loop import run_training

TINY = [
    "model.name=tiny-vit", "data.train.num_samples=128", "data.eval.num_samples=40", "train.batch_size=64",
    "train.epochs=1", "train.progress=false", "train.threads=1", "poison.budget=0.1", "eval.batch_size=40",
]


def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


@pytest.mark.parametrize("text, match", [
    (b'seed: !!python/object/apply:os.system ["touch PWNED"]\n',
     r"line 1, column 7: could not determine a constructor for the tag .*python/object/apply:os\.system.* "
     r"\(tags that build Python objects are refused, never run\)"),
    (b"seed: [unclosed\n", r"invalid YAML: line 2, column 1: .*expected ',' or ']'"),
    (b"seed: 1\nmodel: {name: tiny-vit}\n# caf\xe9\n", r"line 3: not valid UTF-8 \(byte 0xe9\)"),
    (b"- a list\n", r"top level must be a mapping, got list"),
    (b"seed: 1\ntrian: {epochs: 2}\n", r"not a run's config: unknown config key\(s\) trian"),
    (b"seed: 1\ntrain: {epochs: many}\n", r"not a run's config: train\.epochs: expected an integer"),
], ids=["python-tag", "invalid-yaml", "not-utf8", "list", "unknown-key", "wrong-type"])
def test_a_config_yaml_that_cannot_be_loaded_is_one_error_naming_it(tmp_path, monkeypatch, text, match):
    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_bytes(text)
    with pytest.raises(ConfigError, match=match) as err:
        run.config_dict()
    message = str(err.value)
    assert message.startswith(str(run.config_path)) and "\n" not in message
    with pytest.raises(ConfigError, match=f"cannot use {run.path} as the run directory: {run.config_path}"):
        run_training(_cfg(), run.path)
    assert not (tmp_path / "PWNED").exists()


def test_a_run_that_stopped_before_its_first_checkpoint_does_not_lock_its_directory(tmp_path):
    # A typo in a component key is caught before anything is written.
    with pytest.raises(ConfigError, match="attack.*unknown key.*'patchsize'"):
        run_training(_cfg("attack.patchsize=4"), tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    # A missing file is found when the run reads it, after config.yaml is written.
    with pytest.raises((ConfigError, DataError, OSError), match="nowhere.safetensors"):
        run_training(_cfg(f"model.pretrained={tmp_path / 'nowhere.safetensors'}"), tmp_path)
    assert (tmp_path / "config.yaml").is_file() and not RunDir(tmp_path).has_started()
    # A manifest left by an earlier attempt with another budget must not outlive its config.
    (tmp_path / "poison_manifest.json").write_text("{}")
    summary = run_training(_cfg("attack.patch_size=4", "poison.budget=0"), tmp_path)
    assert summary["status"] == "complete" and summary["poisoned_pairs"] == 0
    assert not (tmp_path / "poison_manifest.json").exists()
    assert RunDir(tmp_path).config_dict()["attack"]["patch_size"] == 4


def test_a_run_that_has_a_checkpoint_still_refuses_another_config(tmp_path):
    run_training(_cfg("train.epochs=0"), tmp_path)
    assert RunDir(tmp_path).has_started()
    with pytest.raises(ConfigError, match=r"already holds a run with a different config \(train\.lr"):
        run_training(_cfg("train.epochs=0", "train.lr=0.5"), tmp_path)


@pytest.mark.parametrize("text", [b"{bad", b"[1, 2]", b"\xff\xfe", b"", b"{}", b'{"final": 3}'])
def test_a_damaged_summary_is_one_error_that_says_what_to_do(tmp_path, text):
    run_training(_cfg("train.epochs=0"), tmp_path)
    (tmp_path / "summary.json").write_bytes(text)
    with pytest.raises(ConfigError, match=r"summary\.json is not a run summary.*delete it and run the same "
                                          r"command again: the run resumes from checkpoints/last\.pt"):
        run_training(_cfg("train.epochs=0"), tmp_path)
    (tmp_path / "summary.json").unlink()
    assert run_training(_cfg("train.epochs=0"), tmp_path)["status"] == "complete"
    assert json.loads((tmp_path / "summary.json").read_text())["final"]["epoch"] == 0


@pytest.mark.parametrize("edit", [
    lambda state: {k: v for k, v in state.items() if k != "position"},
    lambda state: {**state, "position": {"epoch": 1, "surprise": 2}},
    lambda state: {**state, "optimizer": {"state": {}, "param_groups": []}},
    lambda state: {**state, "torch_rng": torch.zeros(3)},
    lambda state: [1, 2, 3],
], ids=["no-position", "bad-position", "other-optimizer", "bad-rng", "a-list"])
def test_a_training_state_that_cannot_be_resumed_is_one_error_naming_it(tmp_path, edit):
    run_training(_cfg("train.epochs=1"), tmp_path)
    (tmp_path / "summary.json").unlink()
    last = tmp_path / "checkpoints" / "last.pt"
    torch.save(edit(torch.load(last, weights_only=True)), last)
    with pytest.raises(ConfigError, match=r"last\.pt: not a training state this run can resume from \(.+\); "
                                          r"restore it, or delete the run directory to start again"):
        run_training(_cfg("train.epochs=1"), tmp_path)


def test_reading_run_directories_and_reporting_need_no_torch(tmp_path):
    # Reports, sweeps' bookkeeping and the CLI's checks read run folders on machines and in processes that
    # never train; importing torch there costs seconds and gigabytes. A defense in the config is built when
    # the config is read, so defenses must not import torch either.
    import subprocess
    import sys

    from run_dirs import make_run

    make_run(tmp_path, "pre", evals=[(0.1, 0.0, None), (0.5, 0.9, None)], poison=0.1)
    make_run(tmp_path, "clean", evals=[(0.5, 0.9, 2.0), (0.4, 0.1, 1.9)], source="pre", defense="shrink_perturb")
    code = f"""
import sys
from clipbackdoor.config import load_config
from clipbackdoor.rundir import RunDir
from clipbackdoor.reporting.report import write_report
for name in ("shrink_perturb", "heavy_l2", "cleanclip"):
    load_config(None, ["defense.name=" + name])
RunDir({str(tmp_path / 'clean')!r}).config_dict()
write_report({str(tmp_path)!r})
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
