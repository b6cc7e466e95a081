"""CleanCLIP's in-modal (SSL) term against a loop-by-loop reference of system.md section 1.6."""

from __future__ import annotations

import math

import pytest
import torch
from reference_losses import rand_unit, ref_ce_rows

from clipbackdoor.objectives import VIEWS, model_outputs
from clipbackdoor.objectives.inmodal import InModalLoss


def outputs(n=5, d=4, scale=14.285):
    return model_outputs(
        image=rand_unit(n, d), text=rand_unit(n, d), logit_scale=torch.tensor(scale, dtype=torch.float64),
        image_aug=rand_unit(n, d), text_aug=rand_unit(n, d),
    )


@pytest.mark.parametrize("scale", [1.0, 14.285, 60.0])
def test_matches_bruteforce_reference(scale):
    out = outputs(scale=scale)
    got = InModalLoss()(out)
    img = ref_ce_rows(out["image_features"], out["image_features_aug"], scale)
    txt = ref_ce_rows(out["text_features"], out["text_features_aug"], scale)
    assert got["inmodal_image_loss"].item() == pytest.approx(img, rel=1e-10)
    assert got["inmodal_text_loss"].item() == pytest.approx(txt, rel=1e-10)
    assert got["inmodal_loss"].item() == pytest.approx(0.5 * (img + txt), rel=1e-10)


def test_one_directional_rows_are_originals_columns_are_augmented():
    # CleanCLIP adds CE_rows(s U U~^T) only; the transposed direction (augmented rows) is not part of it.
    # Random views make the two directions differ, so either mistake would be visible.
    out = outputs(n=6)
    s = out["logit_scale"].item()
    got = InModalLoss()(out)["inmodal_image_loss"].item()
    forward = ref_ce_rows(out["image_features"], out["image_features_aug"], s)
    backward = ref_ce_rows(out["image_features_aug"], out["image_features"], s)
    symmetric = 0.5 * (forward + backward)
    assert abs(forward - backward) > 1e-3
    assert got == pytest.approx(forward, rel=1e-10)
    assert got != pytest.approx(symmetric, rel=1e-4)
    assert got != pytest.approx(backward, rel=1e-4)


def test_hand_computed_case_without_same_view_negatives():
    # Two samples whose originals are identical: with only augmented views as columns, row 0 sees logits
    # [s, 0] (target 0) and row 1 sees [s, 0] (target 1). A SimCLR/NT-Xent variant with same-view
    # negatives would add the (identical) other original as a negative and give a different value.
    s = 3.0
    e0, e1 = torch.eye(2, dtype=torch.float64)
    out = model_outputs(
        image=torch.stack([e0, e0]), text=torch.stack([e0, e1]), logit_scale=torch.tensor(s, dtype=torch.float64),
        image_aug=torch.stack([e0, e1]), text_aug=torch.stack([e0, e1]),
    )
    got = InModalLoss()(out)
    row0 = math.log(1 + math.exp(-s))
    row1 = s + math.log(1 + math.exp(-s))
    assert got["inmodal_image_loss"].item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    # texts match their views exactly: each row is log(1 + e^-s)
    assert got["inmodal_text_loss"].item() == pytest.approx(math.log(1 + math.exp(-s)), rel=1e-12)


def test_modalities_do_not_mix():
    # The image term must not see the texts and vice versa.
    out = outputs()
    a = InModalLoss()(out)
    out["text_features"] = rand_unit(*out["text_features"].shape)
    out["text_features_aug"] = rand_unit(*out["text_features"].shape)
    b = InModalLoss()(out)
    assert a["inmodal_image_loss"].item() == b["inmodal_image_loss"].item()
    assert a["inmodal_text_loss"].item() != pytest.approx(b["inmodal_text_loss"].item())


def test_uses_same_scale_as_clip():
    # The SSL term uses the model's learned temperature; doubling s must change it as the reference says.
    out = outputs()
    out["logit_scale"] = torch.tensor(30.0, dtype=torch.float64)
    got = InModalLoss()(out)["inmodal_loss"].item()
    image = ref_ce_rows(out["image_features"], out["image_features_aug"], 30.0)
    ref = 0.5 * (image + ref_ce_rows(out["text_features"], out["text_features_aug"], 30.0))
    assert got == pytest.approx(ref, rel=1e-10)


def test_gradients_flow_to_both_views_and_scale():
    out = outputs()
    leaves = [out["image_features"], out["text_features"], out["image_features_aug"], out["text_features_aug"]]
    for t in leaves:
        t.requires_grad_()
    log_s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out["logit_scale"] = log_s.exp()
    InModalLoss()(out)["inmodal_loss"].backward()
    for t in [*leaves, log_s]:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_needs_views_and_errors_without_them():
    assert VIEWS in InModalLoss.needs
    out = outputs()
    del out["text_features_aug"]
    with pytest.raises(ValueError, match="augmented"):
        InModalLoss()(out)
