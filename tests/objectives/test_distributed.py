"""Cross-rank negatives: gather_features and the losses computed on a simulated multi-rank batch.

``torch.distributed.all_gather`` is replaced by a fake that hands back known blocks, so the test runs in one
process but sees exactly what a rank of a real job would see.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from clipbackdoor.objectives import model_outputs
from clipbackdoor.objectives.clip import ClipLoss
from clipbackdoor.objectives.distributed import gather_features
from clipbackdoor.objectives.inmodal import InModalLoss


def rand_unit(n: int, d: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)


class FakeAllGather:
    """Stands in for dist.all_gather: fills the output list with the blocks of several global tensors, in
    call order (one global tensor per gather_features call), as the other ranks would send them. Each
    gather first exchanges the block sizes (a one-element long tensor), then the padded blocks."""

    def __init__(self, globals_: list[torch.Tensor], world_size: int, sizes: list[int] | None = None) -> None:
        sizes = sizes or [len(globals_[0]) // world_size] * world_size
        self.queue = [list(g.detach().split(sizes)) for g in globals_]
        self.sent: list[torch.Tensor] = []

    def __call__(self, tensor_list, tensor, group=None, async_op=False):
        if tensor.dtype == torch.long and tensor.numel() == 1:
            for out, block in zip(tensor_list, self.queue[0]):
                out.fill_(len(block))
            return
        self.sent.append(tensor)
        blocks = self.queue.pop(0)
        assert len(tensor_list) == len(blocks)
        for out, block in zip(tensor_list, blocks):
            assert out.shape[1:] == block.shape[1:] and len(out) >= len(block)
            out.zero_()
            out[: len(block)] = block


def test_world_size_one_is_identity():
    x = rand_unit(3, 4).requires_grad_()
    assert gather_features(x, 0, 1) is x


def test_rank_major_order_and_gradient_only_through_local_block(monkeypatch):
    world, b = 2, 3
    full = rand_unit(world * b, 4)
    fake = FakeAllGather([full], world)
    monkeypatch.setattr(dist, "all_gather", fake)
    local = full[b:].clone().requires_grad_()  # this process is rank 1
    out = gather_features(local, rank=1, world_size=world)
    # rank-major: block r holds rank r's rows, so targets arange(global_batch) pair row i with column i
    assert torch.equal(out.detach(), full)
    # what is sent to the others carries no graph (all_gather does not backpropagate)
    assert not fake.sent[0].requires_grad
    # gradient reaches the local block only (scaled by the world size, which DDP's average undoes); the
    # other rank's rows are constants here
    weights = torch.arange(world * b * 4, dtype=torch.float64).view(world * b, 4)
    (out * weights).sum().backward()
    assert torch.equal(local.grad, world * weights[b:])
    assert out.requires_grad


def test_gathered_other_blocks_carry_no_gradient(monkeypatch):
    world, b = 3, 2
    full = rand_unit(world * b, 4)
    monkeypatch.setattr(dist, "all_gather", FakeAllGather([full], world))
    local = full[2 * b :].clone().requires_grad_()
    out = gather_features(local, rank=2, world_size=world)
    grad = torch.autograd.grad(out[:, 0].sum(), local)[0]
    assert torch.equal(grad[:, 0], torch.full((b,), float(world), dtype=torch.float64))
    # the detached blocks are not leaves waiting for gradient either
    assert torch.equal(out[: 2 * b].detach(), full[: 2 * b])


def _global_clip(u, v, s):
    u = u.clone().requires_grad_()
    v = v.clone().requires_grad_()
    s = s.clone().requires_grad_()
    loss = ClipLoss()(model_outputs(u, v, s))["clip_loss"]
    loss.backward()
    return loss.item(), u.grad, v.grad, s.grad


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_computes_the_global_clip_loss(monkeypatch, world):
    # Every rank computes the full global-batch loss with its own rows carrying gradient. Then (a) the
    # value equals the single-process loss on the global batch, and (b) each rank's gradient w.r.t. its
    # local rows is `world` times the matching slice of the global gradient, so DDP's averaging over ranks
    # gives exactly the global-batch gradient for the encoders (the original code is 1/world short).
    b = 3
    u, v = rand_unit(world * b, 5), rand_unit(world * b, 5)
    s = torch.tensor(14.285, dtype=torch.float64)
    g_loss, g_du, g_dv, g_ds = _global_clip(u, v, s)
    for rank in range(world):
        fake = FakeAllGather([u, v], world)  # ClipLoss gathers image first, then text
        monkeypatch.setattr(dist, "all_gather", fake)
        lu = u[rank * b : (rank + 1) * b].clone().requires_grad_()
        lv = v[rank * b : (rank + 1) * b].clone().requires_grad_()
        ls = s.clone().requires_grad_()
        loss = ClipLoss(rank=rank, world_size=world)(model_outputs(lu, lv, ls))["clip_loss"]
        loss.backward()
        assert loss.item() == pytest.approx(g_loss, rel=1e-12)
        torch.testing.assert_close(lu.grad, world * g_du[rank * b : (rank + 1) * b], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lv.grad, world * g_dv[rank * b : (rank + 1) * b], rtol=1e-10, atol=1e-12)
        # the scale is not gathered: every rank sees the full derivative of the global loss
        torch.testing.assert_close(ls.grad, g_ds, rtol=1e-10, atol=1e-12)
        assert not fake.queue  # exactly one gather per modality


def test_every_rank_computes_the_global_inmodal_loss(monkeypatch):
    world, b = 2, 3
    n = world * b
    u, v, ua, va = (rand_unit(n, 4) for _ in range(4))
    s = torch.tensor(9.0, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (u, v, ua, va)]
    g = InModalLoss()(model_outputs(leaves[0], leaves[1], s, leaves[2], leaves[3]))["inmodal_loss"]
    g.backward()
    for rank in range(world):
        # InModalLoss gathers image, image_aug, then text, text_aug
        monkeypatch.setattr(dist, "all_gather", FakeAllGather([u, ua, v, va], world))
        sl = slice(rank * b, (rank + 1) * b)
        local = [t[sl].clone().requires_grad_() for t in (u, v, ua, va)]
        loss = InModalLoss(rank=rank, world_size=world)(
            model_outputs(local[0], local[1], s, local[2], local[3])
        )["inmodal_loss"]
        loss.backward()
        assert loss.item() == pytest.approx(g.item(), rel=1e-12)
        for lt, gt in zip(local, leaves):
            torch.testing.assert_close(lt.grad, world * gt.grad[sl], rtol=1e-10, atol=1e-12)


def test_ranks_with_different_row_counts(monkeypatch):
    # A batch that lost a row to an unreadable image is shorter on one rank; the gather pads and unpads,
    # and the loss is still the global one over all the rows that exist.
    sizes = [3, 2]
    u, v = rand_unit(5, 4), rand_unit(5, 4)
    s = torch.tensor(10.0, dtype=torch.float64)
    g_loss, g_du, _, _ = _global_clip(u, v, s)
    monkeypatch.setattr(dist, "all_gather", FakeAllGather([u, v], 2, sizes))
    lu, lv = u[3:].clone().requires_grad_(), v[3:].clone()
    loss = ClipLoss(rank=1, world_size=2)(model_outputs(lu, lv, s))["clip_loss"]
    loss.backward()
    assert loss.item() == pytest.approx(g_loss, rel=1e-12)
    torch.testing.assert_close(lu.grad, 2 * g_du[3:], rtol=1e-10, atol=1e-12)


def test_local_only_loss_differs_from_global(monkeypatch):
    # Sanity check of the test itself: without the gather the rank-0 loss is a different number, so the
    # equality above really depends on the other ranks' negatives.
    b = 3
    u, v = rand_unit(2 * b, 5), rand_unit(2 * b, 5)
    s = torch.tensor(14.285, dtype=torch.float64)
    g_loss = _global_clip(u, v, s)[0]
    local = ClipLoss()(model_outputs(u[:b], v[:b], s))["clip_loss"].item()
    assert local != pytest.approx(g_loss, rel=1e-3)
