"""`clipbackdoor demo --attack NAME`: the preset's sweep with another trigger, inherited by the cleaning runs."""

import pytest

from clipbackdoor.experiments.demo import _with_attack
from clipbackdoor.experiments.stages import pretrain_config
from clipbackdoor.experiments.sweep import expand, load_spec
from clipbackdoor.registry import ConfigError


def test_every_pretraining_run_uses_the_attack():
    jobs = expand(_with_attack(load_spec("demo-quick"), "sig"))
    pretrain = [j for j in jobs if j.command == "pretrain"]
    assert pretrain
    for job in pretrain:
        cfg = pretrain_config(job.config, job.overrides)
        # The section is replaced, not merged: no BadNet patch_size leaks into the SIG attack.
        assert cfg.attack == {"name": "sig", "target": "banana"}
    # Cleaning runs take the attack from the model they clean, so they set none of their own.
    assert all(not any(o.startswith("attack") for o in j.overrides) for j in jobs if j.command == "clean")


def test_unknown_attack_names_the_choices():
    with pytest.raises(ConfigError, match="unknown attack 'nope'.*badnet"):
        _with_attack(load_spec("demo"), "nope")
