"""SigLIP's sigmoid pairwise term against a loop-by-loop reference, its bias, and its global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from objectives.test_distributed import FakeAllGather
from reference_losses import rand_unit

from clipbackdoor.objectives import OBJECTIVES, build_objective, model_outputs
from clipbackdoor.objectives.siglip import SigLipLoss
from clipbackdoor.registry import ConfigError


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_siglip(u: torch.Tensor, v: torch.Tensor, scale: float, bias: float = 0.0, per_row: bool = False) -> float:
    """-1/N^2 sum_ij log sigmoid(y_ij (s <u_i, v_j> + b)), y = +1 if i == j else -1, with scalar arithmetic;
    ``per_row``: the SigLIP paper's -1/N sum_ij instead."""
    uu, vv = u.tolist(), v.tolist()
    n = len(uu)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = scale * sum(a * b for a, b in zip(uu[i], vv[j])) + bias
            y = 1.0 if i == j else -1.0
            total += -log_sigmoid(y * z)
    return total / n if per_row else total / (n * n)


def siglip(u, v, scale, bias=None, **kw):
    term = SigLipLoss(bias=bias is not None, init_bias=bias if bias is not None else -10.0, **kw).double()
    return term(model_outputs(u, v, torch.as_tensor(scale, dtype=torch.float64)))["siglip_loss"]


def test_registered():
    assert "siglip" in OBJECTIVES and OBJECTIVES.get("siglip") is SigLipLoss


# Scales far from 1 (CLIP's initial 14.3, its clamp 100) and biases far from 0 (SigLIP's init -10), so that a
# loss that dropped or doubled either cannot match the reference by accident.
@pytest.mark.parametrize("bias", [None, -10.0, 2.5])
@pytest.mark.parametrize("scale", [1.0, 14.285, 60.0])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_matches_bruteforce_reference(n, scale, bias):
    u, v = rand_unit(n, 5), rand_unit(n, 5)
    got = siglip(u, v, scale, bias)
    assert got.shape == ()
    assert got.item() == pytest.approx(ref_siglip(u, v, scale, bias or 0.0), rel=1e-10, abs=1e-12)


def test_float32_close_to_reference():
    u, v = rand_unit(6, 8, torch.float32), rand_unit(6, 8, torch.float32)
    got = SigLipLoss(bias=True)(model_outputs(u, v, torch.tensor(14.285)))["siglip_loss"].item()
    assert got == pytest.approx(ref_siglip(u.double(), v.double(), 14.285, -10.0), rel=1e-5)


def test_mean_over_all_pairs_not_per_row():
    # The anchor's code averages over N^2 entries; the SigLIP paper's normalisation is N times larger.
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    got = siglip(u, v, 10.0).item()
    assert got == pytest.approx(ref_siglip(u, v, 10.0, per_row=True) / 5, rel=1e-10)
    assert got != pytest.approx(ref_siglip(u, v, 10.0, per_row=True), rel=1e-3)


def test_hand_computed_signs_diagonal_positive():
    # U = V = I_2, s = 3: diagonal logits 3 are positives (-log sigmoid(3) each), off-diagonal logits 0 are
    # negatives (log 2 each). Flipping the labels would give log(1 + e^3) on the diagonal instead.
    e = torch.eye(2, dtype=torch.float64)
    want = (2 * math.log1p(math.exp(-3)) + 2 * math.log(2)) / 4
    assert siglip(e, e, 3.0).item() == pytest.approx(want, rel=1e-12)
    # with a bias b = -1: diagonal logits 2 (-log sigmoid(2)), off-diagonal -1 (-log sigmoid(+1))
    want_b = (2 * math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(-1))) / 4
    assert siglip(e, e, 3.0, bias=-1.0).item() == pytest.approx(want_b, rel=1e-12)


def test_aligned_pairs_score_low_and_swapped_pairs_high():
    e = torch.eye(4, dtype=torch.float64)
    aligned = siglip(e, e, 50.0).item()
    swapped = siglip(e, e[[1, 0, 3, 2]], 50.0).item()
    # aligned: the 4 positives at 50 cost ~0, the 12 negatives at 0 log 2 each; swapped: the 4 positives at 0
    # cost log 2, 4 negatives at 50 cost ~50 each and the other 8 at 0 log 2 each
    assert aligned == pytest.approx(12 * math.log(2) / 16, rel=1e-9)
    assert swapped == pytest.approx((12 * math.log(2) + 4 * 50) / 16, rel=1e-9)


def test_symmetric_in_image_and_text():
    # Swapping image and text transposes the logits; the labels are symmetric, so the loss is unchanged.
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    assert siglip(u, v, 7.0).item() == pytest.approx(siglip(v, u, 7.0).item(), rel=1e-12)


def test_gradients_reach_embeddings_scale_and_bias():
    u = rand_unit(4, 6).requires_grad_()
    v = rand_unit(4, 6).requires_grad_()
    log_s = torch.tensor(math.log(14.285), dtype=torch.float64, requires_grad=True)
    term = SigLipLoss(bias=True).double()
    term(model_outputs(u, v, log_s.exp()))["siglip_loss"].backward()
    for t in (u, v, log_s, term.logit_bias):
        assert t.grad is not None and t.grad.abs().sum() > 0
    # at init (b = -10) almost every logit is a confident negative: more bias would cost the positives, so
    # the loss falls as b rises
    assert term.logit_bias.grad.item() < 0


def test_bias_parameter_only_with_bias_option():
    with_bias = SigLipLoss(bias=True)
    assert [name for name, _ in with_bias.named_parameters()] == ["logit_bias"]
    assert with_bias.logit_bias.shape == () and with_bias.logit_bias.item() == -10.0
    assert SigLipLoss(bias=True, init_bias=-3.5).logit_bias.item() == -3.5
    without = SigLipLoss()
    assert list(without.parameters()) == [] and without.logit_bias is None


def test_bias_is_in_the_objective_state_through_build_objective():
    obj = build_objective({"clip_weight": 0, "siglip_weight": 1, "siglip": {"bias": True}})
    assert set(obj.terms) == {"siglip"}
    params = list(obj.parameters())
    assert len(params) == 1 and params[0] is obj.terms["siglip"].logit_bias
    state = obj.state_dict()
    assert list(state) == ["terms.siglip.logit_bias"] and state["terms.siglip.logit_bias"].item() == -10.0
    # and it comes back through load_state_dict, as a resumed run loads it
    fresh = build_objective({"clip_weight": 0, "siglip_weight": 1, "siglip": {"bias": True}})
    fresh.load_state_dict({"terms.siglip.logit_bias": torch.tensor(-7.0)})
    assert fresh.terms["siglip"].logit_bias.item() == -7.0

    plain = build_objective({"clip_weight": 0, "siglip_weight": 1})
    assert list(plain.parameters()) == [] and plain.state_dict() == {}


def test_mixing_weight_and_no_bias_by_default():
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    s = torch.tensor(14.285, dtype=torch.float64)
    res = build_objective({"clip_weight": 0, "siglip_weight": 0.1})(model_outputs(u, v, s))
    assert res["siglip_loss"].item() == pytest.approx(ref_siglip(u, v, 14.285), rel=1e-10)
    assert res["loss"].item() == pytest.approx(0.1 * ref_siglip(u, v, 14.285), rel=1e-10)


def test_needs_no_views():
    assert not SigLipLoss.needs


@pytest.mark.parametrize(
    "options, needle",
    [({"bias": "yes"}, "bias"), ({"bias": True, "init_bias": "low"}, "init_bias"),
     ({"bias": True, "init_bias": float("nan")}, "init_bias"), ({"temperature": 0.1}, "temperature")],
)
def test_invalid_options_are_config_errors(options, needle):
    with pytest.raises(ConfigError, match=rf"objective\.siglip.*{needle}"):
        build_objective({"siglip_weight": 1, "siglip": options})


# -- global batch across ranks ---------------------------------------------------------------------------------

def _encode(a, w):
    return torch.nn.functional.normalize(a @ w, dim=-1)


def _grads(a, b, wi, wt, log_s, bias, rank=0, world=1):
    """One process's loss and gradients for tiny linear encoders on rows ``a``, ``b``."""
    params = [t.clone().requires_grad_() for t in (wi, wt, log_s)]
    term = SigLipLoss(bias=bias is not None, rank=rank, world_size=world).double()
    if bias is not None:
        with torch.no_grad():
            term.logit_bias.fill_(bias)
    loss = term(model_outputs(_encode(a, params[0]), _encode(b, params[1]), params[2].exp()))["siglip_loss"]
    loss.backward()
    grads = [p.grad for p in params] + ([term.logit_bias.grad] if bias is not None else [])
    return loss.item(), grads


@pytest.mark.parametrize("bias", [None, -2.0])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_average_to_the_single_process_gradient(monkeypatch, world, bias):
    # W ranks, each with its slice of the global batch, gather the others' embeddings and compute the global
    # loss. DDP averages the encoders' gradients over the ranks (and the loop averages the term's own
    # bias): the result must be the gradient of one process on the whole global batch, for every parameter.
    b, d_in, d = 3, 6, 4
    a_img, a_txt = torch.randn(world * b, d_in, dtype=torch.float64), torch.randn(world * b, d_in, dtype=torch.float64)
    wi, wt = torch.randn(d_in, d, dtype=torch.float64), torch.randn(d_in, d, dtype=torch.float64)
    log_s = torch.tensor(math.log(14.285), dtype=torch.float64)
    g_loss, g_grads = _grads(a_img, a_txt, wi, wt, log_s, bias)
    summed = [torch.zeros_like(g) for g in g_grads]
    for rank in range(world):
        # the other ranks' rows, as they would send them: the current encoders' outputs
        fake = FakeAllGather([_encode(a_img, wi), _encode(a_txt, wt)], world)  # image first, then text
        monkeypatch.setattr(dist, "all_gather", fake)
        rows = slice(rank * b, (rank + 1) * b)
        loss, grads = _grads(a_img[rows], a_txt[rows], wi, wt, log_s, bias, rank, world)
        assert loss == pytest.approx(g_loss, rel=1e-12)  # every rank computes the global loss
        assert not fake.queue  # exactly one gather per modality
        for acc, g in zip(summed, grads):
            acc += g
    for acc, g in zip(summed, g_grads):
        torch.testing.assert_close(acc / world, g, rtol=1e-10, atol=1e-12)


def test_local_only_loss_differs_from_global():
    u, v = rand_unit(6, 5), rand_unit(6, 5)
    assert siglip(u[:3], v[:3], 10.0).item() != pytest.approx(siglip(u, v, 10.0).item(), rel=1e-3)


def test_a_models_own_logit_bias_is_used_and_not_doubled():
    from clipbackdoor.objectives import model_outputs
    from clipbackdoor.objectives.siglip import SigLipLoss, sigmoid_pairwise

    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    out = model_outputs(u, v, torch.tensor(10.0), logit_bias=torch.tensor(-3.0))
    expected = sigmoid_pairwise(u, v, torch.tensor(10.0), torch.tensor(-3.0))
    assert torch.allclose(SigLipLoss()(out)["siglip_loss"], expected)
    with pytest.raises(ValueError, match="logit_bias of its own"):
        SigLipLoss(bias=True)(out)
