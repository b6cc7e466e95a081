"""MMCL (CLIP InfoNCE) against a loop-by-loop reference of system.md section 1.6."""

from __future__ import annotations

import math

import pytest
import torch
from reference_losses import rand_unit, ref_ce_rows

from clipbackdoor.objectives import VIEWS, model_outputs
from clipbackdoor.objectives.clip import ClipLoss, info_nce


def ref_mmcl(u: torch.Tensor, v: torch.Tensor, scale: float) -> float:
    return 0.5 * (ref_ce_rows(u, v, scale) + ref_ce_rows(v, u, scale))


# A scale far from 1 (CLIP's initial 1/0.07 ~ 14.3, and its clamp 100) so that a loss that forgot the scale,
# or applied it twice, cannot match the reference by accident.
@pytest.mark.parametrize("scale", [1.0, 14.285, 60.0])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_matches_bruteforce_reference(scale, n):
    u, v = rand_unit(n, 5), rand_unit(n, 5)
    out = model_outputs(image=u, text=v, logit_scale=torch.tensor(scale, dtype=torch.float64))
    got = ClipLoss()(out)["clip_loss"]
    assert got.shape == ()
    assert got.item() == pytest.approx(ref_mmcl(u, v, scale), rel=1e-10, abs=1e-12)


def test_float32_close_to_reference():
    # Training runs in fp32; the reference in fp64 must still agree to float precision.
    u, v = rand_unit(6, 8, torch.float32), rand_unit(6, 8, torch.float32)
    out = model_outputs(image=u, text=v, logit_scale=torch.tensor(14.285))
    got = ClipLoss()(out)["clip_loss"].item()
    assert got == pytest.approx(ref_mmcl(u.double(), v.double(), 14.285), rel=1e-5)


def test_not_one_directional():
    # MMCL averages image->text and text->image; a loss that kept only one direction equals one of the
    # two halves, which generally differ.
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    s = 10.0
    got = ClipLoss()(model_outputs(u, v, torch.tensor(s, dtype=torch.float64)))["clip_loss"].item()
    i2t, t2i = ref_ce_rows(u, v, s), ref_ce_rows(v, u, s)
    assert abs(i2t - t2i) > 1e-3
    assert got == pytest.approx(0.5 * (i2t + t2i), rel=1e-10)


def test_symmetric_in_image_and_text():
    u, v = rand_unit(6, 4), rand_unit(6, 4)
    s = torch.tensor(20.0, dtype=torch.float64)
    a = ClipLoss()(model_outputs(u, v, s))["clip_loss"]
    b = ClipLoss()(model_outputs(v, u, s))["clip_loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_perfectly_aligned_pairs_approach_zero_and_mismatched_are_large():
    # Orthonormal matched pairs with a large scale: every row's softmax is ~one-hot on the diagonal.
    e = torch.eye(4, dtype=torch.float64)
    s = torch.tensor(50.0, dtype=torch.float64)
    aligned = ClipLoss()(model_outputs(e, e, s))["clip_loss"].item()
    swapped = ClipLoss()(model_outputs(e, e[[1, 0, 3, 2]], s))["clip_loss"].item()
    assert aligned < 1e-10
    assert swapped == pytest.approx(50.0, rel=1e-6)  # the right pair scores 0, a wrong one 50


def test_info_nce_targets_are_diagonal():
    q, k = rand_unit(4, 3), rand_unit(4, 3)
    s = torch.tensor(7.0, dtype=torch.float64)
    assert info_nce(q, k, s).item() == pytest.approx(ref_ce_rows(q, k, 7.0), rel=1e-10)


def test_gradients_reach_embeddings_and_scale():
    # The temperature is learned, so the loss must backpropagate into logit_scale as well as both towers.
    u = rand_unit(4, 6).requires_grad_()
    v = rand_unit(4, 6).requires_grad_()
    log_s = torch.tensor(math.log(14.285), dtype=torch.float64, requires_grad=True)
    loss = ClipLoss()(model_outputs(u, v, log_s.exp()))["clip_loss"]
    loss.backward()
    for t in (u, v, log_s):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    # Guards against a detach() or a wrong target slipping into the graph: autograd must agree with the
    # numerical derivative of the reference formula.
    u, v = rand_unit(3, 4), rand_unit(3, 4)
    s = 9.0
    uu = u.clone().requires_grad_()
    ClipLoss()(model_outputs(uu, v, torch.tensor(s, dtype=torch.float64)))["clip_loss"].backward()
    eps = 1e-6
    for i in range(3):
        for d in range(4):
            up, dn = u.clone(), u.clone()
            up[i, d] += eps
            dn[i, d] -= eps
            num = (ref_mmcl(up, v, s) - ref_mmcl(dn, v, s)) / (2 * eps)
            assert uu.grad[i, d].item() == pytest.approx(num, abs=1e-6)


def test_does_not_need_views():
    assert VIEWS not in ClipLoss.needs
    u, v = rand_unit(3, 4), rand_unit(3, 4)
    # no image_aug/text_aug given: must still work
    ClipLoss()(model_outputs(u, v, torch.tensor(1.0, dtype=torch.float64)))
