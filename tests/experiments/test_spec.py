"""Sweep specs: expansion into runs, naming, overrides, and the errors a malformed spec gets."""

import pytest

from clipbackdoor.experiments.spec import expand, load_spec, parse_spec, shipped_sweeps
from clipbackdoor.registry import ConfigError


def spec(**stages):
    return parse_spec({"stages": stages})


def test_grid_is_a_cross_product_named_by_labels_and_values():
    jobs = expand(spec(pre={"command": "pretrain", "config": "mmcl", "set": {"train.epochs": 2},
                            "grid": {"objective": {"mmcl": {"inmodal_weight": 0.0}, "ssl": {"inmodal_weight": 1.0}},
                                     "seed": [0, 1]}}))
    assert [j.name for j in jobs] == ["pre/mmcl_seed-0", "pre/mmcl_seed-1", "pre/ssl_seed-0", "pre/ssl_seed-1"]
    # A section given as a value merges like dotted overrides, so the objective's other keys survive.
    assert jobs[2].overrides == ["train.epochs=2", "objective.inmodal_weight=1.0", "seed=0"]
    assert jobs[2].params == {"objective": "ssl", "seed": "seed-0"}


def test_clean_stage_is_crossed_with_every_source_run():
    jobs = expand(spec(pre={"command": "pretrain", "grid": {"seed": [0, 1]}},
                       clean={"command": "clean", "from": "pre",
                              "grid": {"defense.name": ["cleanclip", "mmcl"], "train.lr": ["1e-3"]}}))
    cleaning = [j for j in jobs if j.stage == "clean"]
    assert [j.name for j in cleaning] == [
        "clean/seed-0/cleanclip_lr-0.001", "clean/seed-0/mmcl_lr-0.001",
        "clean/seed-1/cleanclip_lr-0.001", "clean/seed-1/mmcl_lr-0.001"]
    assert {j.source for j in cleaning} == {"pre/seed-0", "pre/seed-1"}
    # YAML 1.1 reads 1e-3 as a string; the sweep must pass the number on.
    assert "train.lr=0.001" in cleaning[0].overrides


def test_stages_follow_their_sources_whatever_the_key_order():
    # yaml.safe_dump sorts keys, which puts "clean" before "pre"; the sweep must still pre-train first.
    jobs = expand(spec(clean={"command": "clean", "from": "pre"}, pre={"command": "pretrain"}))
    assert [j.stage for j in jobs] == ["pre", "clean"]


def test_list_stage_uses_entry_names():
    jobs = expand(spec(pre={"command": "pretrain", "list": [{"name": "a", "seed": 3}, {"train.lr": 0.1}]}))
    assert [j.name for j in jobs] == ["pre/a", "pre/lr-0.1"]
    assert jobs[0].overrides == ["seed=3"]


@pytest.mark.parametrize("stages, message", [
    ({"pre": {"command": "train"}}, "stages.pre.command"),
    ({"pre": {"command": "pretrain", "grids": {}}}, "unknown key(s) grids"),
    ({"c": {"command": "clean", "from": "pre"}}, "stages.c.from: must name another stage"),
    ({"c": {"command": "clean", "from": "c"}}, "stages.c.from: must name another stage"),
    ({"pre": {"command": "pretrain", "grid": {"seed": []}}}, "stages.pre.grid.seed: no values"),
    ({"pre": {"command": "pretrain", "grid": {"seed": 3}}}, "stages.pre.grid.seed: expected a list"),
    ({"pre": {"command": "pretrain", "grid": {}, "list": [{}]}}, "either 'grid' or 'list'"),
    ({"pre": {"command": "pretrain", "list": [{"seed": 1}, {"seed": 1}]}}, "share a directory"),
])
def test_malformed_specs_name_the_field(stages, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(parse_spec({"stages": stages}))


def test_unknown_top_level_key_and_bad_workers():
    with pytest.raises(ConfigError, match="unknown key"):
        parse_spec({"stages": {"p": {"command": "pretrain"}}, "worker": 2})
    with pytest.raises(ConfigError, match="sweep.workers"):
        parse_spec({"stages": {"p": {"command": "pretrain"}}, "workers": 0})


def test_shipped_sweeps_expand_and_their_configs_validate():
    # Every run of every shipped preset must resolve to a valid config, or the demo would fail midway.
    from clipbackdoor.experiments.jobs import check_jobs

    assert {"demo", "demo-quick", "paper-mini"} <= set(shipped_sweeps())
    for name in shipped_sweeps():
        jobs = expand(load_spec(name))
        assert jobs, name
        check_jobs(jobs, "unused")  # every run, cleaning runs too, down to the component keys
