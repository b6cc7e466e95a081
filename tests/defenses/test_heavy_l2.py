"""heavy_l2: the weight decay it is given really applies, with fresh optimizer state."""

import pytest
import torch
from safetensors.torch import load_file

from clipbackdoor.config import load_config
from clipbackdoor.experiments.stages import clean_config
from clipbackdoor.io import read_jsonl
from clipbackdoor.registry import ConfigError
from clipbackdoor.train.checkpoint import load_state
from clipbackdoor.train.loop import run_training
from clipbackdoor.train.optim import no_decay

TINY = ["data.train.num_samples=64", "data.eval.num_samples=60", "train.batch_size=64", "train.epochs=1",
        "train.warmup_steps=1", "train.progress=false", "train.threads=1", "eval.batch_size=60"]


def test_resolves_to_weight_decay_fresh_optimizer_and_cleanclip_objective():
    cfg = load_config(None, ["defense.name=heavy_l2", "defense.weight_decay=20"])
    assert cfg.train.weight_decay == 20.0
    assert cfg.init.inherit_optimizer is False
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 1.0}
    assert load_config(None, ["defense.name=heavy_l2", "defense.inmodal_weight=0"]).objective["inmodal_weight"] == 0


def test_a_different_user_weight_decay_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.weight_decay conflicts with defense 'heavy_l2'"):
        load_config(None, ["defense.name=heavy_l2", "defense.weight_decay=5", "train.weight_decay=0.3"])
    with pytest.raises(ConfigError, match="init.inherit_optimizer"):
        load_config(None, ["defense.name=heavy_l2", "init.inherit_optimizer=true"])
    # The same value is no conflict.
    load_config(None, ["defense.name=heavy_l2", "defense.weight_decay=5", "train.weight_decay=5"])


@pytest.mark.parametrize("bad", [-1, "big"])
def test_impossible_weight_decay_is_one_line_error(bad):
    with pytest.raises(ConfigError, match="defense.weight_decay"):
        load_config(None, ["defense.name=heavy_l2", f"defense.weight_decay={bad}"])


def test_decay_applies_in_the_first_step(tmp_path):
    # One step from the same weights and batch with weight decay W and with 0: AdamW's decoupled decay makes
    # theta_W = theta_0 - lr * W * theta_start for every decayed tensor and leaves the others equal.
    source = tmp_path / "source"
    run_training(load_config(None, TINY), source)
    start = load_file(source / "checkpoints" / "epoch_1.safetensors")
    runs = {}
    for wd in (0, 50):
        runs[wd] = tmp_path / f"wd-{wd}"
        cfg = clean_config(source, None, [*TINY, "data.train.num_samples=64"], defense="heavy_l2")
        cfg.defense["weight_decay"] = wd
        cfg = load_config(None, [], base=cfg.to_dict())
        run_training(cfg, runs[wd])
    lr = next(r["lr"] for r in read_jsonl(runs[50] / "metrics.jsonl") if r["kind"] == "train")
    plain, decayed = (load_file(runs[wd] / "checkpoints" / "epoch_1.safetensors") for wd in (0, 50))
    state = load_state(runs[50] / "checkpoints" / "last.pt")
    assert {g["name"]: g["weight_decay"] for g in state["optimizer"]["param_groups"]}["decay"] == 50.0
    checked = 0
    for key, theta in start.items():
        if not theta.is_floating_point() or key.endswith("attn_mask"):
            continue
        param = torch.nn.Parameter(theta)
        if no_decay(key, param):
            torch.testing.assert_close(decayed[key], plain[key])
        else:
            torch.testing.assert_close(decayed[key], plain[key] - lr * 50 * theta, rtol=1e-4, atol=1e-6)
            checked += 1
    assert checked > 5
