"""`clipbackdoor demo --preset headline` and the `study-scale` sweep: as shipped, and run at a tiny size."""

import copy
import json

import pytest

from clipbackdoor.experiments.demo import PRESETS
from clipbackdoor.experiments.spec import expand, load_spec, parse_spec
from clipbackdoor.experiments.sweep import run_sweep
from clipbackdoor.reporting.report import write_report

TINY = {"data.train.num_samples": 256, "data.eval.num_samples": 100, "train.batch_size": 64,
        "train.warmup_steps": 1, "eval.batch_size": 100, "train.epochs": 1}
TINY_CLEAN = {**TINY, "data.train.num_samples": 128,
              "data.validation": {"name": "synthetic", "split": "val", "num_samples": 64}}


def _spec(name, **stage_edits):
    """A shipped spec with ``stage_edits`` (stage -> {"set": {...}, "grid": {...}}, or None to drop the
    stage) merged in."""
    raw = copy.deepcopy(load_spec(name).raw)
    for stage_name, edits in stage_edits.items():
        if edits is None:
            del raw["stages"][stage_name]
            continue
        stage = raw["stages"][stage_name]
        for part, values in edits.items():
            stage[part] = {**stage.get(part, {}), **values}
    return parse_spec(raw)


@pytest.mark.parametrize("name, architectures", [(PRESETS["headline"], 1), ("study-scale", 2)])
def test_every_cleaning_run_has_its_control(name, architectures):
    jobs = expand(load_spec(name))
    pretrain = [j for j in jobs if j.command == "pretrain"]
    clean = [j for j in jobs if j.command == "clean"]
    # 3 seeds x architectures x 2 objectives x (poisoned, control); each cleaned at 3 learning rates.
    assert len(pretrain) == 12 * architectures and len(clean) == 36 * architectures
    poisoned = {j.name for j in pretrain if j.name.endswith("_poisoned")}
    assert {n.replace("_poisoned", "_control") for n in poisoned} == {j.name for j in pretrain} - poisoned
    # Both objectives see the same poison rate: the comparison the paper makes.
    assert {o for j in pretrain if j.name in poisoned for o in j.overrides if o.startswith("poison.budget")} == {
        "poison.budget=0.2"}


def test_the_preset_is_the_scale_study_at_mid_clip():
    # Same runs, same names: a study-scale folder holds the preset's runs, and the other way round.
    preset = {j.name: j.overrides for j in expand(load_spec(PRESETS["headline"]))}
    study = {j.name: j.overrides for j in expand(load_spec("study-scale")) if "mid-clip" in j.name}
    assert preset == study


def test_the_preset_runs_at_a_tiny_size(tmp_path):
    spec = _spec(PRESETS["headline"], pretrain={"set": TINY, "grid": {"seed": [0]}},
                 clean={"set": TINY_CLEAN, "grid": {"train.lr": [1.0e-3]}})
    result = run_sweep(spec, tmp_path, echo=lambda line: None)
    assert result.ok and len(result.completed) == 8
    report = write_report(tmp_path)
    assert not (tmp_path / "scales").exists()  # one architecture: the ordinary report
    assert "The paper's headline" in (tmp_path / "summary.md").read_text() and report.verdict


def test_the_scale_study_at_a_tiny_size_reports_the_headline_against_scale(tmp_path):
    # Every architecture and objective is pre-trained, poisoned and as a control, cleaned, and the report
    # draws the effect against scale with a whole report per architecture.
    spec = _spec("study-scale", pretrain={"set": TINY, "grid": {"seed": [0]}},
                 clean={"set": TINY_CLEAN, "grid": {"train.lr": [1.0e-3]}})
    result = run_sweep(spec, tmp_path, echo=lambda line: None)
    assert result.ok and len(result.completed) == 16
    report = write_report(tmp_path)
    assert (tmp_path / "plots" / "scale.png").is_file()
    for model in ("tiny-clip", "mid-clip"):
        assert (tmp_path / "scales" / model / "report.html").is_file()
    paragraphs = report.verdict.split("\n\n")
    assert paragraphs[0].startswith("tiny-clip (1.5M parameters, 1 seed(s))")  # smallest first
    assert paragraphs[1].startswith("mid-clip (5.9M parameters, 1 seed(s))")


@pytest.mark.slow
@pytest.mark.parametrize("name", [PRESETS["headline"], PRESETS["default"]])
def test_one_seed_learns_the_poison_under_both_objectives(tmp_path, name):
    # About 6 minutes for the headline preset's mid-clip, 3 for the default demo's tiny-clip: seed 0's
    # poisoned pre-trainings as the preset runs them, only evaluated on 500 test images instead of 2,000.
    # Were one objective not to learn the backdoor, the headline's comparison would be confounded: both
    # must reach ASR > 80%.
    grid = {"poison.budget": {"poisoned": 0.2}, **({"seed": [0]} if name == PRESETS["headline"] else {})}
    spec = _spec(name, pretrain={"set": {"data.eval.num_samples": 500}, "grid": grid}, clean=None)
    result = run_sweep(spec, tmp_path, echo=lambda line: None)
    assert result.ok and len(result.completed) == 2
    asr = {run: json.loads((tmp_path / run / "summary.json").read_text())["final"]["asr_top1"]
           for run in result.completed}
    assert all(value > 0.8 for value in asr.values()), asr
