"""Every registered defense through the real loop: one cleaning epoch from a tiny pre-trained model, and,
for a defense with a start hook, an interrupted run that resumes to exactly the uninterrupted one."""

import pytest
import torch
from safetensors.torch import load_file

import clipbackdoor.train.loop as loop
from clipbackdoor.config import load_config
from clipbackdoor.defenses import DEFENSES
from clipbackdoor.experiments.stages import clean_config
from clipbackdoor.io import read_jsonl
from clipbackdoor.train.loop import run_training

TINY = [
    "data.train.num_samples=256", "data.eval.num_samples=60", "train.batch_size=64", "train.epochs=1",
    "train.warmup_steps=1", "train.log_every=1", "train.progress=false", "train.threads=1", "eval.batch_size=60",
    "attack.patch_size=4",
]
CLEAN = [*TINY, "data.train.num_samples=192", "train.epochs=2", "train.checkpoint_every_steps=2"]
TIMING = {"samples_per_second", "eval_seconds", "epoch_seconds"}
# Options that keep a defense's own settings fit for 192 images (k-means clusters).
OPTIONS = {"deep_clustering": ["defense.k=4"]}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain")
    run_training(load_config(None, [*TINY, "poison.budget=0.1"]), run)
    return run


def _clean(pretrained, name, *extra):
    return clean_config(pretrained, None, [*CLEAN, *OPTIONS.get(name, []), *extra], defense=name)


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_cleans_through_the_loop(pretrained, tmp_path, name):
    cfg = _clean(pretrained, name)
    summary = run_training(cfg, tmp_path)
    assert summary["status"] == "complete"
    train = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert train and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    # Every active term of the objective the defense resolved to is logged.
    for key, weight in cfg.objective.items():
        if key.endswith("_weight") and weight > 0:
            assert f"{key[:-len('_weight')]}_loss" in train[0]
    # The run's config records what the defense resolved to.
    written = (tmp_path / "config.yaml").read_text()
    assert f"name: {name}" in written and "objective:" in written
    start = load_file(tmp_path / "checkpoints" / "epoch_0.safetensors")
    end = load_file(tmp_path / "checkpoints" / "epoch_2.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)


HOOKED = [n for n in DEFENSES.names() if DEFENSES.get(n).has_start_hook()]


def test_some_defense_has_a_start_hook():
    assert "shrink_perturb" in HOOKED


@pytest.mark.parametrize("name", HOOKED)
def test_start_hook_runs_once_and_resume_is_exact(pretrained, tmp_path, monkeypatch, name):
    calls = {"hook": 0}
    hook = DEFENSES.get(name).start

    def counted(self, run):
        calls["hook"] += 1
        hook(self, run)

    monkeypatch.setattr(DEFENSES.get(name), "start", counted)
    whole = tmp_path / "whole"
    run_training(_clean(pretrained, name), whole)
    assert calls["hook"] == 1

    # Interrupted in step 3 (after the step-2 checkpoint), then resumed: the hook must not run again.
    steps = {"n": 0}
    real_step = loop.Trainer.step

    def crashing(self, batch):
        steps["n"] += 1
        if steps["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)

    parted = tmp_path / "parted"
    monkeypatch.setattr(loop.Trainer, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_training(_clean(pretrained, name), parted)
    monkeypatch.setattr(loop.Trainer, "step", real_step)
    run_training(_clean(pretrained, name), parted)
    assert calls["hook"] == 2  # whole run + the first part; the resumed part did not apply it again
    assert _records(parted) == _records(whole)
    a, b = (load_file(d / "checkpoints" / "epoch_2.safetensors") for d in (whole, parted))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_defense_sweep_names_every_registered_defense():
    # The shipped sweep behind docs/defenses.md's table: a defense added without it would be missing there.
    from clipbackdoor.experiments.spec import load_spec

    clean = next(s for s in load_spec("defenses").stages if s.name == "clean")
    assert {overrides["defense.name"] for _, overrides in clean.points} == set(DEFENSES.names())


def test_inherited_optimizer_state_gets_a_fresh_group_for_the_objectives_own_parameters(pretrained, tmp_path):
    # The pre-training's AdamW state has two groups; a deep-clustering run has a third, for its head.
    from clipbackdoor.train.checkpoint import load_state

    run_training(_clean(pretrained, "deep_clustering", "init.inherit_optimizer=true", "train.epochs=1"), tmp_path)
    groups = load_state(tmp_path / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["no_decay", "decay", "objective"]
