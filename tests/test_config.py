"""Configuration: defaults, YAML layering, dotted overrides and validation with the offending field named."""

from __future__ import annotations

import pytest
import yaml

from clipbackdoor.config import (
    ExperimentConfig,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    shipped_configs,
    validate,
)
from clipbackdoor.registry import ConfigError


def test_defaults_validate_and_load_equals_defaults():
    validate(ExperimentConfig())
    assert load_config().to_dict() == ExperimentConfig().to_dict()


def test_numeric_overrides_are_parsed_as_numbers():
    # YAML 1.1 reads "1e-3" as a string; the learning rate must still arrive as the float 0.001.
    cfg = load_config(None, ["train.lr=1e-3", "poison.budget=0.05", "train.epochs=3"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.poison.budget == 0.05
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)


@pytest.mark.parametrize(
    "text, value",
    [
        ("train.lr=1e-3", 1e-3),
        ("train.lr=2E-4", 2e-4),
        ("train.lr=5.0e-4", 5e-4),
        ("train.epochs=7", 7),
        ("train.progress=false", False),
        ("init.checkpoint=runs/a.b/last.pt", "runs/a.b/last.pt"),  # dotted string stays a string
        ("attack.target=banana", "banana"),
        ("train.grad_clip=", None),
    ],
)
def test_parse_override_values(text, value):
    _, parsed = parse_override(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_override_splits_path():
    assert parse_override("data.train.num_samples=10") == (["data", "train", "num_samples"], 10)


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=1", ".lr=1"])
def test_malformed_overrides(text):
    with pytest.raises(ConfigError):
        load_config(None, [text])


def test_float_accepted_for_int_only_when_whole():
    assert load_config(None, ["train.epochs=3.0"]).train.epochs == 3
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=2.5"])


def test_int_accepted_for_float():
    cfg = load_config(None, ["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lrr=1", "train.lrr"),
        ("trian.lr=1", "trian"),
        ("eval.every_epochs=true", "eval.every_epochs"),
    ],
)
def test_unknown_keys_are_named(override, field):
    # A typo must fail with the key's name instead of silently training with the default.
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lrr=1"])
    assert "lr" in str(err.value) and "warmup_steps" in str(err.value)


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=true", "train.epochs"),  # a bool is not a count
        ("train.lr=fast", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.progress=1", "train.progress"),
        ("train.progress=yes please", "train.progress"),
        ("train.device=[1, 2]", "train.device"),
        ("data.train=3", "data.train"),
        ("train.epochs=", "train.epochs"),  # null where a number is required
        ("train=5", "train"),
    ],
)
def test_wrong_types_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=-1", "train.epochs"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.beta2=1.0", "train.beta"),
        ("train.warmup_steps=-5", "train.warmup_steps"),
        ("train.schedule=linear", "train.schedule"),
        ("train.precision=fp16", "train.precision"),
        ("train.grad_clip=0", "train.grad_clip"),
        ("train.log_every=0", "train.log_every"),
        ("poison.budget=-0.05", "poison.budget"),
        ("poison.budget=2.5", "poison.budget"),  # a count of 2.5 pairs
        ("eval.asr_draws=0", "eval.asr_draws"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.max_images=0", "eval.max_images"),
        ("data.text_augment_per=batch", "data.text_augment_per"),
        ("data.num_workers=-1", "data.num_workers"),
    ],
)
def test_impossible_values_rejected(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize("budget", ["0", "0.5", "0.999", "1", "1500", "1500.0"])
def test_valid_budgets(budget):
    # >= 1 is a whole count, < 1 a rate
    load_config(None, [f"poison.budget={budget}"])


def test_component_name_required():
    with pytest.raises(ConfigError, match="attack"):
        config_from_dict({**ExperimentConfig().to_dict(), "attack": {"target": "banana"}})
    with pytest.raises(ConfigError, match="data.eval"):
        data = ExperimentConfig().to_dict()
        data["data"]["eval"] = {"split": "test"}
        config_from_dict(data)


# --- YAML layering ------------------------------------------------------------------------------------


def write_yaml(tmp_path, obj, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj))
    return path


def test_yaml_layers_over_defaults_and_overrides_win(tmp_path):
    path = write_yaml(tmp_path, {"train": {"epochs": 3, "lr": 1e-4}, "poison": {"budget": 0.01}})
    cfg = load_config(path, ["train.epochs=5"])
    assert cfg.train.epochs == 5  # override beats the file
    assert cfg.train.lr == 1e-4  # file beats the default
    assert cfg.train.batch_size == ExperimentConfig().train.batch_size  # untouched default kept
    assert cfg.poison.budget == 0.01


def test_base_sits_between_defaults_and_file(tmp_path):
    # ``base`` is an upstream run's config (cleaning inherits model/attack/eval from pre-training).
    base = {"train": {"epochs": 30, "lr": 9e-4}, "attack": {"name": "badnet", "target": "cherry"}}
    path = write_yaml(tmp_path, {"train": {"epochs": 2}})
    cfg = load_config(path, [], base=base)
    assert cfg.train.epochs == 2 and cfg.train.lr == 9e-4 and cfg.attack["target"] == "cherry"


def test_component_section_replaced_when_name_changes(tmp_path):
    # Switching the training set from synthetic to csv must drop the synthetic-only keys (split,
    # num_samples); merged, they would reach the csv constructor as unknown options.
    path = write_yaml(tmp_path, {"data": {"train": {"name": "csv", "path": "pairs.csv"}}})
    cfg = load_config(path)
    assert cfg.data.train == {"name": "csv", "path": "pairs.csv"}
    assert cfg.data.eval["name"] == "synthetic"  # the sibling section is untouched


def test_component_section_merged_when_name_kept(tmp_path):
    path = write_yaml(tmp_path, {"data": {"train": {"num_samples": 100}}})
    assert load_config(path).data.train == {"name": "synthetic", "split": "train", "num_samples": 100}
    path = write_yaml(tmp_path, {"data": {"train": {"name": "synthetic", "difficulty": 0.9}}}, "b.yaml")
    assert load_config(path).data.train == {
        "name": "synthetic", "split": "train", "num_samples": 20000, "difficulty": 0.9,
    }


def test_whole_section_override_replaces_component():
    cfg = load_config(None, ["data.train={name: csv, path: pairs.csv}"])
    assert cfg.data.train == {"name": "csv", "path": "pairs.csv"}


@pytest.mark.parametrize(
    "overrides",
    [["data.train.name=csv", "data.train.path=pairs.csv"], ["data.train.path=pairs.csv", "data.train.name=csv"]],
)
def test_dotted_name_override_replaces_component(overrides):
    # The same rule on the command line, whatever the order of the overrides: otherwise split/num_samples
    # of the synthetic default would reach the csv constructor and the dataset could not be switched.
    cfg = load_config(None, overrides)
    assert cfg.data.train == {"name": "csv", "path": "pairs.csv"}


def test_dotted_same_name_override_keeps_section():
    cfg = load_config(None, ["data.train.name=synthetic", "data.train.num_samples=10"])
    assert cfg.data.train == {"name": "synthetic", "split": "train", "num_samples": 10}


def test_dotted_defense_name_override_replaces_section():
    # `clipbackdoor clean --defense mmcl` inserts defense.name=mmcl over a defense section that may hold
    # cleanclip options; they must not leak into mmcl (which takes none).
    cfg = load_config(None, ["defense.name=mmcl"], base={"defense": {"name": "cleanclip", "inmodal_weight": 2}})
    assert cfg.defense == {"name": "mmcl"}
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 0.0}


def test_defense_option_given_before_rename_survives():
    # the option belongs to the new defense even when written before the name change
    cfg = load_config(
        None, ["defense.inmodal_weight=3", "defense.name=ssl"], base={"defense": {"name": "cleanclip", "clip_weight": 2}}
    )
    assert cfg.defense == {"name": "ssl", "inmodal_weight": 3}
    assert cfg.objective == {"clip_weight": 0.0, "inmodal_weight": 3}


def test_read_yaml_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config("no-such-config")
    assert "no-such-config" in str(err.value) and "mmcl" in str(err.value)  # lists the shipped ones
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    typo = write_yaml(tmp_path, {"train": {"epochs": 1, "bacth_size": 4}}, "typo.yaml")
    with pytest.raises(ConfigError, match=r"train\.bacth_size"):
        load_config(typo)


def test_empty_yaml_is_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_config(empty).to_dict() == ExperimentConfig().to_dict()


# --- defenses -----------------------------------------------------------------------------------------


def test_defense_sets_the_objective():
    cfg = load_config(None, ["defense.name=cleanclip", "defense.inmodal_weight=2"])
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 2}
    cfg = load_config(None, ["defense.name=ssl"])
    assert cfg.objective["clip_weight"] == 0.0 and cfg.objective["inmodal_weight"] > 0


@pytest.mark.parametrize("order", ["objective first", "defense first"])
def test_objective_override_with_defense_raises(order):
    # The defense decides the objective; an objective.* override next to it would be silently replaced.
    overrides = ["objective.inmodal_weight=3", "defense.name=cleanclip"]
    if order == "defense first":
        overrides.reverse()
    with pytest.raises(ConfigError, match="defense"):
        load_config(None, overrides)


def test_objective_override_without_defense_is_fine():
    assert load_config(None, ["objective.inmodal_weight=0.5"]).objective["inmodal_weight"] == 0.5


def test_unknown_defense_lists_choices():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["defense.name=prune"])
    assert "prune" in str(err.value) and "cleanclip" in str(err.value)


def test_defense_option_typo_is_named():
    with pytest.raises(ConfigError, match="inmodal_wieght"):
        load_config(None, ["defense.name=cleanclip", "defense.inmodal_wieght=2"])


# --- shipped configs ----------------------------------------------------------------------------------


def test_shipped_configs_listed():
    names = shipped_configs()
    assert {"mmcl", "mmcl-ssl", "clean"} <= set(names)


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_config_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    # the resolved config a run writes (config.yaml) must load back to the same config
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    if cfg.defense:  # a cleaning run writes its defense and the objective it implies; read back as a dict
        assert config_from_dict(yaml.safe_load(path.read_text())).to_dict() == cfg.to_dict()
    else:
        assert load_config(path).to_dict() == cfg.to_dict()


def test_shipped_objectives_match_their_names():
    assert load_config("mmcl").objective["inmodal_weight"] == 0
    assert load_config("mmcl-ssl").objective["inmodal_weight"] > 0
    assert load_config("mmcl-ssl").objective["clip_weight"] > 0
