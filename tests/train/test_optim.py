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
