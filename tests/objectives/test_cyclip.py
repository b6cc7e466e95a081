"""CyCLIP's cyclic-consistency terms against a loop-by-loop reference of its code, and their global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from objectives.test_distributed import FakeAllGather
from reference_losses import rand_unit

from clipbackdoor.objectives import OBJECTIVES, build_objective, model_outputs
from clipbackdoor.objectives.clip import ClipLoss
from clipbackdoor.objectives.cyclip import CyClipLoss
from clipbackdoor.registry import ConfigError


def ref_cyclic(u: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[float, float]:
    """CyCLIP's code with scalar arithmetic: mean_ij (s a_ij - s b_ij)^2 / s^2 * N, for (a, b) = (U U^T,
    V V^T) and (U V^T, V U^T)."""
    uu, vv = u.tolist(), v.tolist()
    n = len(uu)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))  # noqa: E731
    inmodal = cross = 0.0
    for i in range(n):
        for j in range(n):
            inmodal += (scale * dot(uu[i], uu[j]) - scale * dot(vv[i], vv[j])) ** 2
            cross += (scale * dot(uu[i], vv[j]) - scale * dot(vv[i], uu[j])) ** 2
    return inmodal / (n * n) / scale**2 * n, cross / (n * n) / scale**2 * n


def cyclip(u, v, scale=14.285, **options):
    return CyClipLoss(**options)(model_outputs(u, v, torch.as_tensor(scale, dtype=torch.float64)))


def test_registered_without_parameters_or_views():
    assert "cyclip" in OBJECTIVES and OBJECTIVES.get("cyclip") is CyClipLoss
    assert list(CyClipLoss().parameters()) == [] and not CyClipLoss.needs


@pytest.mark.parametrize("weights", [{}, {"in_weight": 1.0, "cross_weight": 0.0},
                                     {"in_weight": 0.3, "cross_weight": 2.0}])
@pytest.mark.parametrize("scale", [1.0, 14.285, 100.0])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_matches_bruteforce_reference(n, scale, weights):
    u, v = rand_unit(n, 5), rand_unit(n, 5)
    got = cyclip(u, v, scale, **weights)
    ref_in, ref_cross = ref_cyclic(u, v, scale)
    assert got["cyclip_in_loss"].item() == pytest.approx(ref_in, rel=1e-10, abs=1e-12)
    assert got["cyclip_cross_loss"].item() == pytest.approx(ref_cross, rel=1e-10, abs=1e-12)
    w_in, w_cross = weights.get("in_weight", 0.25), weights.get("cross_weight", 0.25)
    assert got["cyclip_loss"].shape == ()
    assert got["cyclip_loss"].item() == pytest.approx(w_in * ref_in + w_cross * ref_cross, rel=1e-10, abs=1e-12)


def test_float32_close_to_reference():
    u, v = rand_unit(6, 8, torch.float32), rand_unit(6, 8, torch.float32)
    got = CyClipLoss()(model_outputs(u, v, torch.tensor(14.285)))
    ref_in, ref_cross = ref_cyclic(u.double(), v.double(), 14.285)
    assert got["cyclip_in_loss"].item() == pytest.approx(ref_in, rel=1e-5)
    assert got["cyclip_cross_loss"].item() == pytest.approx(ref_cross, rel=1e-5)


def test_times_batch_size_not_plain_mean():
    # mean over N^2 entries times N: doubling the batch with a copy of itself keeps the mean of the squared
    # differences and so doubles the term.
    u, v = rand_unit(4, 5), rand_unit(4, 5)
    one = cyclip(u, v)
    two = cyclip(torch.cat([u, u]), torch.cat([v, v]))
    for key in ("cyclip_in_loss", "cyclip_cross_loss"):
        assert two[key].item() == pytest.approx(2 * one[key].item(), rel=1e-10)


def test_zero_for_consistent_embeddings_positive_otherwise():
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    same = cyclip(u, u.clone())
    assert same["cyclip_in_loss"].item() == 0.0 and same["cyclip_cross_loss"].item() == 0.0
    assert same["cyclip_loss"].item() == 0.0
    other = cyclip(u, v)
    assert other["cyclip_in_loss"].item() > 0 and other["cyclip_cross_loss"].item() > 0


def test_in_and_cross_are_not_swapped():
    # V = U R, R a rotation: V V^T = U U^T (in-modal consistent) but U V^T = U R^T U^T is not symmetric.
    u = rand_unit(5, 3)
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    got = cyclip(u, u @ rot)
    assert got["cyclip_in_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert got["cyclip_cross_loss"].item() > 1e-3
    # U = I, V symmetric with unit rows: U V^T = V^T is symmetric (cross-modal consistent), V V^T != I.
    c, s = math.cos(0.4), math.sin(0.4)
    got = cyclip(torch.eye(2, dtype=torch.float64), torch.tensor([[c, s], [s, c]], dtype=torch.float64))
    assert got["cyclip_cross_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert got["cyclip_in_loss"].item() == pytest.approx(2 * (2 * c * s) ** 2 / 4 * 2, rel=1e-12)


def test_scale_cancels():
    # CyCLIP multiplies the similarities by s and divides the squares by s^2: the terms do not depend on s,
    # and the term puts no gradient (not even rounding noise) on the temperature.
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    a, b = cyclip(u, v, 1.0)["cyclip_loss"], cyclip(u, v, 77.0)["cyclip_loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    log_s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    loss = CyClipLoss()(model_outputs(u.requires_grad_(), v, log_s.exp()))["cyclip_loss"]
    assert torch.autograd.grad(loss, log_s, allow_unused=True)[0] is None


def test_gradients_reach_both_embeddings():
    u = rand_unit(4, 6).requires_grad_()
    v = rand_unit(4, 6).requires_grad_()
    CyClipLoss()(model_outputs(u, v, torch.tensor(14.285, dtype=torch.float64)))["cyclip_loss"].backward()
    for t in (u, v):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_mixed_with_clip_total_is_the_sum():
    u, v = rand_unit(6, 4), rand_unit(6, 4)
    out = model_outputs(u, v, torch.tensor(14.285, dtype=torch.float64))
    res = build_objective({"clip_weight": 1, "cyclip_weight": 1})(out)
    assert {"clip_loss", "cyclip_loss", "cyclip_in_loss", "cyclip_cross_loss", "loss"} <= set(res)
    clip = ClipLoss()(out)["clip_loss"].item()
    ref_in, ref_cross = ref_cyclic(u, v, 14.285)
    assert res["clip_loss"].item() == pytest.approx(clip, rel=1e-12)
    assert res["loss"].item() == pytest.approx(res["clip_loss"].item() + res["cyclip_loss"].item(), rel=1e-12)
    assert res["loss"].item() == pytest.approx(clip + 0.25 * ref_in + 0.25 * ref_cross, rel=1e-10)


def test_options_reach_the_term():
    obj = build_objective({"clip_weight": 1, "cyclip_weight": 1, "cyclip": {"in_weight": 0.5, "cross_weight": 0}})
    assert (obj.terms["cyclip"].in_weight, obj.terms["cyclip"].cross_weight) == (0.5, 0.0)


@pytest.mark.parametrize(
    "options, needle",
    [({"in_weight": -0.1}, "in_weight"), ({"cross_weight": -1}, "cross_weight"), ({"in_weight": True}, "in_weight"),
     ({"cross_weight": "0.25"}, "cross_weight"), ({"in_weight": float("inf")}, "in_weight"),
     ({"lambda1": 0.25}, "lambda1")],
)
def test_invalid_options_are_config_errors(options, needle):
    with pytest.raises(ConfigError, match=rf"objective\.cyclip.*{needle}"):
        build_objective({"clip_weight": 1, "cyclip_weight": 1, "cyclip": options})


def test_negative_weight_is_a_value_error_on_its_own():
    with pytest.raises(ValueError, match="in_weight"):
        CyClipLoss(in_weight=-0.25)


# -- global batch across ranks ---------------------------------------------------------------------------------

def _encode(a, w):
    return torch.nn.functional.normalize(a @ w, dim=-1)


def _grads(a, b, wi, wt, rank=0, world=1):
    params = [t.clone().requires_grad_() for t in (wi, wt)]
    out = model_outputs(_encode(a, params[0]), _encode(b, params[1]), torch.tensor(14.285, dtype=torch.float64))
    parts = CyClipLoss(in_weight=0.7, cross_weight=0.4, rank=rank, world_size=world)(out)
    parts["cyclip_loss"].backward()
    return {k: v.item() for k, v in parts.items()}, [p.grad for p in params]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_average_to_the_single_process_gradient(monkeypatch, world):
    # As for CLIP: every rank gathers the others' embeddings, computes the global terms, and DDP's average of
    # the encoders' gradients over the ranks is one process's gradient on the whole global batch.
    b, d_in, d = 3, 6, 4
    a_img, a_txt = torch.randn(world * b, d_in, dtype=torch.float64), torch.randn(world * b, d_in, dtype=torch.float64)
    wi, wt = torch.randn(d_in, d, dtype=torch.float64), torch.randn(d_in, d, dtype=torch.float64)
    g_parts, g_grads = _grads(a_img, a_txt, wi, wt)
    summed = [torch.zeros_like(g) for g in g_grads]
    for rank in range(world):
        fake = FakeAllGather([_encode(a_img, wi), _encode(a_txt, wt)], world)  # image first, then text
        monkeypatch.setattr(dist, "all_gather", fake)
        rows = slice(rank * b, (rank + 1) * b)
        parts, grads = _grads(a_img[rows], a_txt[rows], wi, wt, rank, world)
        for key, value in g_parts.items():
            assert parts[key] == pytest.approx(value, rel=1e-12), key
        assert not fake.queue
        for acc, g in zip(summed, grads):
            acc += g
    for acc, g in zip(summed, g_grads):
        torch.testing.assert_close(acc / world, g, rtol=1e-10, atol=1e-12)


def test_local_only_terms_differ_from_global():
    u, v = rand_unit(6, 5), rand_unit(6, 5)
    assert cyclip(u[:3], v[:3])["cyclip_loss"].item() != pytest.approx(cyclip(u, v)["cyclip_loss"].item(), rel=1e-3)
