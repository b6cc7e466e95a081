"""AdamW with CLIP's two parameter groups (system.md section 1.7) on the shipped tiny-clip architecture."""

from __future__ import annotations

import pytest
import torch

from clipbackdoor.models import create_model
from clipbackdoor.train.optim import build_optimizer, no_decay


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # The shipped architecture with a throwaway vocabulary: the parameter names and shapes are those of
    # tiny-clip whether or not the synthetic vocabulary asset is present.
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["apple", "banana", "photo", "of", "a"]) + "\n")
    torch.manual_seed(0)
    return create_model("tiny-clip", tokenizer={"name": "words", "vocab": str(vocab), "context_length": 16}).model


def groups(opt):
    return {g["name"]: g for g in opt.param_groups}


def names_in(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_no_decay_rule_on_names_and_shapes():
    w2 = torch.nn.Parameter(torch.zeros(3, 3))
    w1 = torch.nn.Parameter(torch.zeros(3))
    assert no_decay("visual.bn1.weight", w1)
    assert no_decay("transformer.resblocks.0.ln_1.weight", w1)
    assert no_decay("visual.conv1.bias", w1)
    assert no_decay("logit_scale", torch.nn.Parameter(torch.tensor(1.0)))  # 0-d
    assert not no_decay("visual.conv1.weight", torch.nn.Parameter(torch.zeros(4, 3, 3, 3)))
    assert not no_decay("text_projection", w2)
    # a 2-d tensor whose name says it is a norm/bias (CleanCLIP's name rule) is still excluded
    assert no_decay("ln_final.weight_matrix", w2)


def test_groups_partition_trainable_parameters(model):
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    g = groups(opt)
    assert set(g) == {"decay", "no_decay"}
    plain, decay = g["no_decay"]["params"], g["decay"]["params"]
    all_ids = [id(p) for p in plain + decay]
    assert len(all_ids) == len(set(all_ids))  # no parameter in both groups
    assert set(all_ids) == {id(p) for p in model.parameters()}


def test_group_contents_on_tiny_clip(model):
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    g = groups(opt)
    plain = names_in(model, g["no_decay"]["params"])
    decay = names_in(model, g["decay"]["params"])
    # the temperature must never shrink towards 0 by weight decay
    assert "logit_scale" in plain
    for name, p in model.named_parameters():
        if any(k in name for k in ("bn", "ln", "bias")) or p.ndim < 2:
            assert name in plain, name
        else:
            assert name in decay, name
    # the model really has both kinds (so the checks above are not vacuous)
    assert any("bn" in n for n in plain) and any("ln" in n for n in plain) and any("bias" in n for n in plain)
    assert "token_embedding.weight" in decay and "text_projection" in decay
    assert any(n.startswith("visual.") and n.endswith("weight") for n in decay)


def test_hyper_parameters(model):
    opt = build_optimizer(model, lr=2e-3, weight_decay=0.2, betas=(0.85, 0.98), eps=1e-6)
    assert isinstance(opt, torch.optim.AdamW)
    g = groups(opt)
    assert g["no_decay"]["weight_decay"] == 0.0
    assert g["decay"]["weight_decay"] == 0.2
    for group in opt.param_groups:
        assert group["lr"] == 2e-3 and group["betas"] == (0.85, 0.98) and group["eps"] == 1e-6


def test_frozen_parameters_are_left_out():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    net[0].weight.requires_grad_(False)
    opt = build_optimizer(net, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)
    ids = {id(p) for group in opt.param_groups for p in group["params"]}
    assert id(net[0].weight) not in ids
    assert len(ids) == 5


def test_weight_decay_really_skips_no_decay_group():
    # One AdamW step with zero gradient: decoupled weight decay moves only the decay group.
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(1.0)
    opt = build_optimizer(net, lr=0.1, weight_decay=0.5, betas=(0.9, 0.999), eps=1e-8)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(net.bias, torch.ones(2))
    assert torch.allclose(net.weight, torch.full((2, 2), 1 - 0.1 * 0.5))


# -- fused AdamW (train.fused_optimizer) ---------------------------------------------------------------------

# Fused AdamW computes the same update as the plain paths, but its kernel orders the float operations
# differently (vectorised, the bias corrections in float32), so results may differ by a few float32 ulps per
# step: on the same gradients, parameters of magnitude <= ~1 agree after a few steps to well within rtol 1e-5 /
# atol 1e-6. (On the development CPU six steps on fixed gradients were bit-identical; see the loop test for
# what happens when the gradients come from the updated weights.)
FUSED_RTOL, FUSED_ATOL = 1e-5, 1e-6


class _Objective(torch.nn.Module):
    """An objective term with parameters of its own (a head and a bias), the optimizer's third group."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 3)
        self.bias = torch.nn.Parameter(torch.tensor(-1.0))


def _steps(net, objective, fused: bool, foreach: bool | None = None, steps: int = 6):
    """``steps`` AdamW steps on fixed pseudo-random gradients (the same for every call), with the learning
    rate changed per step as the training loop does; returns the optimizer."""
    opt = build_optimizer(net, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, objective=objective,
                          fused=fused)
    if foreach is not None:
        for group in opt.param_groups:
            group["foreach"] = foreach
    gen = torch.Generator().manual_seed(1)
    params = [p for group in opt.param_groups for p in group["params"]]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * (step + 1) / steps
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_fused_adamw_equals_the_plain_paths(model, monkeypatch, foreach):
    import copy

    calls = []
    kernel = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    torch.manual_seed(0)
    objective = _Objective()
    fused_net, fused_obj = copy.deepcopy(model), copy.deepcopy(objective)
    plain_net, plain_obj = copy.deepcopy(model), copy.deepcopy(objective)
    fused = _steps(fused_net, fused_obj, fused=True)
    assert len(calls) == 6 * 3  # the fused kernel really ran: once a step for each group (one device and dtype)
    plain = _steps(plain_net, plain_obj, fused=False, foreach=foreach)
    assert len(calls) == 6 * 3
    names = [g["name"] for g in fused.param_groups]
    assert names == ["no_decay", "decay", "objective"] == [g["name"] for g in plain.param_groups]
    assert [g["fused"] for g in fused.param_groups] == [True] * 3
    assert [g["fused"] for g in plain.param_groups] == [None] * 3
    assert [g["weight_decay"] for g in fused.param_groups] == [0.0, 0.1, 0.0]
    pairs = [*zip(fused_net.parameters(), plain_net.parameters()), *zip(fused_obj.parameters(), plain_obj.parameters())]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=FUSED_RTOL, atol=FUSED_ATOL)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fused.state[a][key], plain.state[b][key], rtol=FUSED_RTOL, atol=FUSED_ATOL)
        assert float(fused.state[a]["step"]) == float(plain.state[b]["step"]) == 6
    # The updates did move the parameters (so agreement is not trivial), decay group included.
    assert not torch.equal(fused_net.text_projection, model.text_projection)


@pytest.mark.parametrize("saved_fused, fused", [(False, True), (True, False)])
def test_a_loaded_state_runs_this_optimizers_kernel(saved_fused, fused):
    # A resumed or inherited state brings the groups it was saved with; the run's own setting must win.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    saved = _steps(net, None, fused=saved_fused, steps=2).state_dict()
    opt = build_optimizer(net, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    opt.load_state_dict(saved)
    assert [g["fused"] for g in opt.param_groups] == [True if fused else None] * 2
    for p in net.parameters():
        assert opt.state[p]["step"].dtype == torch.float32 and opt.state[p]["step"].device.type == "cpu"
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(float(opt.state[p]["step"]) == 3 for p in net.parameters())


def test_fused_optimizer_run_matches_the_plain_run(tmp_path):
    """Two steps through the real loop (tests/train/test_loop.py's TINY, cut to 128 pairs): the second step's
    loss is the first that depends on an AdamW update, and the evaluation after the epoch sees both."""
    from safetensors.torch import load_file

    from clipbackdoor.config import load_config
    from clipbackdoor.io import read_jsonl
    from clipbackdoor.train.checkpoint import load_state
    from clipbackdoor.train.loop import run_training

    tiny = ["data.train.num_samples=128", "data.eval.num_samples=120", "train.batch_size=64", "train.epochs=1",
            "train.warmup_steps=2", "train.log_every=1", "train.progress=false", "train.threads=1",
            "poison.budget=0.1", "attack.patch_size=4", "eval.batch_size=64"]
    for name, fused in (("plain", "false"), ("fused", "true")):
        run_training(load_config(None, [*tiny, f"train.fused_optimizer={fused}"]), tmp_path / name)
    timing = {"samples_per_second", "eval_seconds", "epoch_seconds"}

    def records(name):
        return [{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(tmp_path / name / "metrics.jsonl")]

    plain, fused = records("plain"), records("fused")
    assert [(r["kind"], r["step"]) for r in fused] == [(r["kind"], r["step"]) for r in plain]
    assert [r["step"] for r in fused if r["kind"] == "train"] == [1, 2]
    for a, b in zip(fused, plain):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                # Losses to float32 rounding; accuracies and ASR are counts of images, which weights this close
                # do not change.
                assert value == pytest.approx(b[key], rel=FUSED_RTOL, abs=FUSED_ATOL), (a["kind"], key)
            else:
                assert value == b[key], (a["kind"], key)
    # The weights after the epoch: Adam's normalised step m / sqrt(v) turns the last-ulp differences of the
    # first update into differences of a fraction of lr where a gradient is near zero, so single entries may
    # differ by up to ~1e-3 here. All together they must differ by under 1% of how far the two steps moved
    # the weights from their initialisation (measured: 0.03%).
    start = load_file(tmp_path / "plain" / "checkpoints" / "epoch_0.safetensors")
    fused_w, plain_w = (load_file(tmp_path / run / "checkpoints" / "epoch_1.safetensors") for run in ("fused", "plain"))
    assert fused_w.keys() == plain_w.keys() == start.keys()
    keys = [k for k in start if start[k].is_floating_point()]
    apart = sum(float((fused_w[k].double() - plain_w[k].double()).square().sum()) for k in keys) ** 0.5
    moved = sum(float((plain_w[k].double() - start[k].double()).square().sum()) for k in keys) ** 0.5
    assert moved > 1.0 and apart < 0.01 * moved, (apart, moved)
    groups = load_state(tmp_path / "fused" / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [g["fused"] for g in groups] == [True, True]
    groups = load_state(tmp_path / "plain" / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [g["fused"] for g in groups] == [None, None]


def test_fused_optimizer_is_an_execution_key(tmp_path):
    """A run directory written before the key existed, or with the other setting, is the same experiment: it
    resumes, and a sweep still finds its complete runs (config.EXECUTION_KEYS)."""
    import yaml

    from clipbackdoor.config import load_config
    from clipbackdoor.rundir import RunDir

    old = load_config(None, []).to_dict()
    del old["train"]["fused_optimizer"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"started")
    run = RunDir(tmp_path)
    for value in ("false", "true"):
        cfg = load_config(None, [f"train.fused_optimizer={value}"])
        assert run.config_differences(cfg) == []
        run.write_config(cfg)  # a started run with a different config would be refused
    assert run.config_differences(load_config(None, ["train.lr=1"])) == ["train.lr: 0.002 -> 1.0"]  # not vacuous
