"""Poisoned cleaning sets: a cleaning run with ``poison.budget=k`` poisons k of its own pairs with the attack
of the model it cleans, records the manifest, and the shipped sweep crosses k with both objectives."""

import json

from clipbackdoor.cli import main
from clipbackdoor.config import dump_config
from clipbackdoor.experiments.sweep import expand, job_config, load_spec
from clipbackdoor.reporting.collect import collect_runs

SWEEP = "demo-poisoned-cleaning"


def test_shipped_sweep_cleans_both_poisoned_models_with_k_poisons():
    jobs = expand(load_spec(SWEEP))
    pretrain = [j for j in jobs if j.command == "pretrain"]
    clean = [j for j in jobs if j.command == "clean"]
    assert [j.name for j in pretrain] == ["pretrain/mmcl-ssl", "pretrain/mmcl"]
    assert all("poison.budget=0.1" in j.overrides for j in pretrain)  # both poisoned, no controls
    assert len(clean) == 2 * 4 * 2
    for source in ("mmcl-ssl", "mmcl"):
        for k in (0, 1, 5, 25):
            for lr in ("0.001", "0.003"):
                job = next(j for j in clean if j.name == f"clean/{source}/poisons-{k}_lr-{lr}")
                assert job.source == f"pretrain/{source}" and job.config == "clean"
                assert f"poison.budget={k}" in job.overrides and 'defense.name="cleanclip"' in job.overrides
                assert job.params == {"poison.budget": f"poisons-{k}", "train.lr": f"lr-{lr}"}


def test_sweep_cleaning_run_poisons_with_the_source_models_attack(tmp_path):
    # A clean job resolves against its source's config.yaml: the attack comes from there, k from the grid.
    jobs = {j.name: j for j in expand(load_spec(SWEEP))}
    source = jobs["pretrain/mmcl"]
    upstream = job_config(source, tmp_path, threads=1)
    upstream.attack = {**upstream.attack, "target": "apple", "patch_size": 3}  # not the clean config's default
    (tmp_path / source.name).mkdir(parents=True)
    (tmp_path / source.name / "config.yaml").write_text(dump_config(upstream))
    cfg = job_config(jobs["clean/mmcl/poisons-5_lr-0.001"], tmp_path, threads=1)
    assert cfg.poison.budget == 5 and cfg.poison.manifest is None
    assert cfg.attack == upstream.attack and cfg.seed == upstream.seed
    assert cfg.data.train["split"] == "clean" and cfg.data.train["num_samples"] == 2000
    assert cfg.defense["name"] == "cleanclip" and cfg.init.checkpoint == str(tmp_path / source.name)
    assert job_config(jobs["clean/mmcl/poisons-0_lr-0.001"], tmp_path, threads=1).poison.budget == 0


TINY = ["data.train.num_samples=128", "data.eval.num_samples=50", "train.batch_size=64", "train.epochs=1",
        "train.warmup_steps=1", "train.progress=false", "eval.batch_size=50", "model.name=tiny-clip"]


def test_cleaning_with_two_poisons_records_them(tmp_path):
    pre, clean = tmp_path / "pre", tmp_path / "clean"
    assert main(["pretrain", "--config", "mmcl", "--out", str(pre), *TINY, "poison.budget=0.1",
                 "attack.patch_size=3"]) == 0
    assert main(["clean", "--from", str(pre), "--out", str(clean), *TINY, "poison.budget=2"]) == 0

    assert json.loads((clean / "summary.json").read_text())["poisoned_pairs"] == 2
    manifest = json.loads((clean / "poison_manifest.json").read_text())
    source = json.loads((pre / "poison_manifest.json").read_text())
    assert manifest["num_poisoned"] == 2 and manifest["dataset"]["split"] == "clean"
    assert manifest["attack"] == source["attack"] and manifest["attack"]["patch_size"] == 3
    assert all(s["caption"] != s["original_caption"] for s in manifest["samples"])
    assert (clean / "trigger_gallery.png").is_file() and (pre / "trigger_gallery.png").is_file()
    # The report counts them apart from the poisons of the model it cleaned.
    runs = {r.name: r for r in collect_runs(tmp_path)}
    assert runs["clean"].cleaning_poisons == 2 and runs["clean"].poisoned and runs["pre"].cleaning_poisons == 0
