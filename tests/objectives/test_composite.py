"""The weighted objective: L = clip_weight * L_MMCL + inmodal_weight * L_SSL, built from a config section."""

from __future__ import annotations

import pytest
import torch

from clipbackdoor.objectives import OBJECTIVES, VIEWS, WeightedObjective, build_objective, model_outputs
from clipbackdoor.objectives.clip import ClipLoss
from clipbackdoor.objectives.inmodal import InModalLoss
from clipbackdoor.registry import ConfigError


def rand_unit(n: int, d: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)


def outputs(n=5, d=4, views=True):
    return model_outputs(
        image=rand_unit(n, d), text=rand_unit(n, d), logit_scale=torch.tensor(14.285, dtype=torch.float64),
        image_aug=rand_unit(n, d) if views else None, text_aug=rand_unit(n, d) if views else None,
    )


def test_both_terms_registered():
    # The config names terms by registry key; CleanCLIP's flags are clip_weight / inmodal_weight.
    assert "clip" in OBJECTIVES and "inmodal" in OBJECTIVES


@pytest.mark.parametrize("wc, wi", [(1.0, 1.0), (0.7, 2.5), (1, 0.25)])
def test_loss_is_weighted_sum(wc, wi):
    out = outputs()
    obj = build_objective({"clip_weight": wc, "inmodal_weight": wi})
    res = obj(out)
    clip = ClipLoss()(out)["clip_loss"]
    ssl = InModalLoss()(out)["inmodal_loss"]
    assert res["clip_loss"].item() == pytest.approx(clip.item(), rel=1e-12)
    assert res["inmodal_loss"].item() == pytest.approx(ssl.item(), rel=1e-12)
    assert res["loss"].item() == pytest.approx(wc * clip.item() + wi * ssl.item(), rel=1e-12)
    # the per-modality parts of the SSL term are logged too
    assert {"inmodal_image_loss", "inmodal_text_loss"} <= set(res)


def test_clip_only_never_computes_views():
    # "MMCL" runs must not make augmented views (expensive, and the data pipeline skips them); a term with
    # weight 0 is therefore not built at all rather than multiplied by zero.
    obj = build_objective({"clip_weight": 1.0, "inmodal_weight": 0.0})
    assert VIEWS not in obj.needs
    assert set(obj.terms) == {"clip"}
    res = obj(outputs(views=False))  # would raise inside InModalLoss if it were evaluated
    assert set(res) == {"clip_loss", "loss"}
    assert res["loss"].item() == pytest.approx(res["clip_loss"].item())


def test_ssl_only():
    obj = build_objective({"clip_weight": 0, "inmodal_weight": 2.0})
    assert VIEWS in obj.needs
    assert set(obj.terms) == {"inmodal"}
    out = outputs()
    res = obj(out)
    assert "clip_loss" not in res
    assert res["loss"].item() == pytest.approx(2.0 * InModalLoss()(out)["inmodal_loss"].item(), rel=1e-12)


def test_missing_weight_means_term_off():
    obj = build_objective({"clip_weight": 1})
    assert set(obj.terms) == {"clip"}


def test_backward_through_total():
    out = outputs()
    for t in (out["image_features"], out["text_features"], out["image_features_aug"], out["text_features_aug"]):
        t.requires_grad_()
    build_objective({"clip_weight": 1, "inmodal_weight": 1})(out)["loss"].backward()
    for t in (out["image_features"], out["text_features"], out["image_features_aug"], out["text_features_aug"]):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_rank_and_world_size_are_passed_to_terms():
    obj = build_objective({"clip_weight": 1, "inmodal_weight": 1}, rank=1, world_size=4)
    for term in obj.terms.values():
        assert (term.rank, term.world_size) == (1, 4)


def test_term_options_accepted_when_known():
    obj = build_objective({"clip_weight": 1, "clip": {"rank": 0}})
    assert isinstance(obj, WeightedObjective)


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"clip_weight": 1, "clipp_weight": 1}, "clipp_weight"),  # typo of a term name
        ({"clip_weight": 1, "temperature": 0.07}, "temperature"),  # not a term at all
        ({"clip_weight": -0.5}, "clip_weight"),  # negative weight
        ({"clip_weight": True}, "clip_weight"),  # a bool is not a weight
        ({"clip_weight": "1"}, "clip_weight"),  # nor a string
        ({"clip_weight": 0, "inmodal_weight": 0}, "at least one"),  # nothing to train
        ({}, "at least one"),
        ({"clip_weight": 1, "inmodal": 3}, "inmodal"),  # options must be a mapping
        ({"clip_weight": 1, "inmodal": [1]}, "inmodal"),
        ({"clip_weight": 1, "inmodal_weight": 1, "inmodal": {"temperature": 1}}, "temperature"),  # bad option
    ],
)
def test_invalid_sections_raise_config_error(section, needle):
    # A typo in the objective must stop the run with the key's name, not silently train something else.
    with pytest.raises(ConfigError, match=needle):
        build_objective(section)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_objective({"clip_weigth": 1})
    assert "clip_weight" in str(err.value) and "inmodal_weight" in str(err.value)
