"""`clipbackdoor demo --preset headline`: the headline against model size, as shipped and at a tiny size."""

import copy
import json

import pytest

from clipbackdoor.experiments.demo import PRESETS
from clipbackdoor.experiments.sweep import expand, load_spec, parse_spec, run_sweep
from clipbackdoor.reporting.report import write_report


def _headline(**stage_edits):
    """The shipped preset's spec, with ``stage_edits`` (stage -> {"set": {...}, "grid": {...}}) merged in."""
    raw = copy.deepcopy(load_spec(PRESETS["headline"]).raw)
    for name, edits in stage_edits.items():
        if edits is None:
            del raw["stages"][name]
            continue
        stage = raw["stages"][name]
        for part, values in edits.items():
            stage[part] = {**stage.get(part, {}), **values}
    return parse_spec(raw)


def test_the_shipped_preset_has_controls_for_every_cleaning_run():
    jobs = expand(load_spec(PRESETS["headline"]))
    pretrain = [j for j in jobs if j.command == "pretrain"]
    clean = [j for j in jobs if j.command == "clean"]
    # 3 seeds x 2 architectures x 2 objectives x (poisoned, control); each cleaned at 3 learning rates.
    assert len(pretrain) == 24 and len(clean) == 72
    poisoned = [j for j in pretrain if j.name.endswith("_poisoned")]
    assert {j.name.replace("_poisoned", "_control") for j in poisoned} == {j.name for j in pretrain} - {
        j.name for j in poisoned}
    # Both objectives see the same poison rate: the comparison the paper makes.
    assert {o for j in poisoned for o in j.overrides if o.startswith("poison.budget")} == {"poison.budget=0.2"}


def test_the_preset_at_a_tiny_size_reports_the_headline_against_scale(tmp_path):
    # The preset's own spec, shrunk to a few steps and one seed: every architecture and objective is
    # pre-trained, poisoned and as a control, cleaned, and the report draws the effect against scale.
    tiny = {"data.train.num_samples": 256, "data.eval.num_samples": 100, "train.batch_size": 64,
            "train.warmup_steps": 1, "eval.batch_size": 100, "train.epochs": 1}
    spec = _headline(
        pretrain={"set": tiny, "grid": {"seed": [0]}},
        clean={"set": {**tiny, "data.train.num_samples": 128,
                       "data.validation": {"name": "synthetic", "split": "val", "num_samples": 64}},
               "grid": {"train.lr": [1.0e-3]}},
    )
    result = run_sweep(spec, tmp_path, echo=lambda line: None)
    assert result.ok and len(result.completed) == 16
    report = write_report(tmp_path)
    assert (tmp_path / "plots" / "scale.png").is_file()
    for model in ("tiny-clip", "mid-clip"):
        assert (tmp_path / "scales" / model / "report.html").is_file()
    lines = report.verdict.splitlines()
    assert lines[0].startswith("tiny-clip (1.5M parameters, 1 seed(s))")  # smallest first
    assert lines[2].startswith("mid-clip (5.9M parameters, 1 seed(s))")


@pytest.mark.slow
def test_one_seed_of_the_preset_learns_the_poison_under_both_objectives(tmp_path):
    # Three minutes: the preset's pre-training of its smaller architecture, seed 0, poisoned runs only, at
    # the preset's full size. At a poison rate where MMCL+SSL did not learn the backdoor, the headline's
    # comparison would be confounded: both objectives must reach ASR > 80%.
    spec = _headline(pretrain={"grid": {"seed": [0], "model.name": ["tiny-clip"], "poison.budget": {"poisoned": 0.2}}},
                     clean=None)
    result = run_sweep(spec, tmp_path, echo=lambda line: None)
    assert result.ok and len(result.completed) == 2
    asr = {name: json.loads((tmp_path / name / "summary.json").read_text())["final"]["asr_top1"]
           for name in result.completed}
    assert all(value > 0.8 for value in asr.values()), asr
