"""deep_clustering: spherical k-means, the pseudo-label cross-entropy against a brute-force reference, the
epoch hook, the training state, the labels-file variant, two gloo ranks against one process, and an
interrupted cleaning run through the real loop.

Run as a script (``python -m torch.distributed.run ... test_deep_clustering.py OUT LABELS KEY=VALUE...``) it
is one rank of the two-process job of ``test_two_gloo_ranks_match_one_process``.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from interrupt import train_until_interrupted
from safetensors.torch import load_file

from clipbackdoor.errors import ConfigError, DataError
from clipbackdoor.objectives import EpochContext, build_objective, model_outputs
from clipbackdoor.objectives.deep_clustering import DeepClusteringLoss, read_labels, spherical_kmeans


def rand_unit(n: int, d: int, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, dtype=dtype), dim=-1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class FakeEpoch:
    """An EpochContext whose images are given, recording the parameters whose optimizer state is reset."""

    def __init__(self, u: torch.Tensor, rows: torch.Tensor | None = None, seed: int = 0, epoch: int = 0) -> None:
        self.u, self.rows = u, torch.arange(len(u)) if rows is None else rows
        self.reset: list[list[torch.nn.Parameter]] = []
        self.embedded = 0
        self.ctx = EpochContext(epoch=epoch, device=torch.device("cpu"), generator=gen(seed),
                                embed_images=self._embed, reset_optimizer_state=self.reset.append)

    def _embed(self):
        self.embedded += 1
        return self.u, self.rows


def write_labels(path: Path, rows: list[tuple[object, object]], header: str = "index,label") -> Path:
    path.write_text("\n".join([header, *(f"{a},{b}" for a, b in rows)]) + "\n")
    return path


# -- spherical k-means ---------------------------------------------------------------------------------
def blobs(k: int = 5, per: int = 40, d: int = 16, noise: float = 0.05):
    centres = rand_unit(k, d)
    truth = torch.arange(k).repeat_interleave(per)
    x = F.normalize(centres[truth] + noise * torch.randn(k * per, d, dtype=torch.float64), dim=-1)
    order = torch.randperm(k * per)
    return x[order], truth[order]


def test_kmeans_recovers_well_separated_clusters():
    x, truth = blobs()
    # The initial centroids are k distinct points drawn with the generator (faiss's init): a draw that
    # misses a true cluster ends in a local optimum, as it would in the original. Take the first seed whose
    # draw hits every cluster; k-means must then find them exactly.
    seed = next(s for s in range(100) if len(set(truth[torch.randperm(len(x), generator=gen(s))[:5]].tolist())) == 5)
    result = spherical_kmeans(x, 5, 20, gen(seed))
    found = result.assignments
    # the same partition up to the clusters' order
    pairs = set(zip(found.tolist(), truth.tolist()))
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5
    torch.testing.assert_close(result.centroids.norm(dim=1), torch.ones(5, dtype=torch.float64))
    # each centroid is the normalised mean of its cluster
    for j in range(5):
        mean = F.normalize(x[found == j].mean(0), dim=0)
        torch.testing.assert_close(result.centroids[j], mean)
    assert result.iterations < 20  # converged, stopped early


def test_kmeans_is_deterministic_for_a_seed_and_depends_on_it():
    x = rand_unit(300, 8)
    a, b = spherical_kmeans(x, 12, 20, gen(3)), spherical_kmeans(x, 12, 20, gen(3))
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    c = spherical_kmeans(x, 12, 20, gen(4))
    assert not torch.equal(a.centroids, c.centroids)
    torch.testing.assert_close(a.centroids.norm(dim=1), torch.ones(12, dtype=torch.float64))


def test_kmeans_lowers_the_objective_and_early_stop_changes_nothing():
    x = rand_unit(400, 6)
    objective = lambda c: (x @ c.T).max(dim=1).values.sum().item()  # noqa: E731  (sum of cosines)
    one, many = spherical_kmeans(x, 10, 1, gen(1)), spherical_kmeans(x, 10, 50, gen(1))
    assert objective(many.centroids) > objective(one.centroids)
    assert many.iterations < 50
    # more iterations than needed give exactly the converged result
    again = spherical_kmeans(x, 10, many.iterations + 5, gen(1))
    assert torch.equal(again.centroids, many.centroids)


def test_an_empty_cluster_is_reseeded_at_the_farthest_point():
    # Two duplicated points start as two centroids: the second gets no point (ties go to the first), so it
    # is re-seeded at the point farthest from its centroid, and every cluster ends non-empty.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
    # a seed whose draw of 3 initial rows starts with the two duplicates
    seed = next(s for s in range(1000) if sorted(torch.randperm(5, generator=gen(s))[:2].tolist()) == [0, 1])
    result = spherical_kmeans(x, 3, 20, gen(seed))
    assert result.reseeded >= 1
    assert torch.bincount(result.assignments, minlength=3).min() >= 1


def test_kmeans_refuses_more_clusters_than_points():
    with pytest.raises(ValueError, match="k = 6"):
        spherical_kmeans(rand_unit(5, 3), 6, 20, gen())


# -- the loss ------------------------------------------------------------------------------------------
def ready_term(k=4, d=5, seed=0) -> DeepClusteringLoss:
    term = DeepClusteringLoss(k=k, embed_dim=d).double()
    g = gen(seed)
    with torch.no_grad():
        term.centroids.copy_(F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1))
        term.head.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        term.head.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
        term.clusters.fill_(k)
    return term


def reference_loss(u, centroids, weight, bias):
    """Nearest centroid by explicit dot products, then log-softmax cross-entropy by hand, in float64."""
    n, k, d = len(u), len(centroids), u.shape[1]
    total = 0.0
    for i in range(n):
        sims = [sum(u[i, t].item() * centroids[j, t].item() for t in range(d)) for j in range(k)]
        label = max(range(k), key=lambda j: sims[j])
        logits = [sum(weight[j, t].item() * u[i, t].item() for t in range(d)) + bias[j].item() for j in range(k)]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        total += log_z - logits[label]
    return total / n


def test_loss_equals_the_brute_force_reference_and_its_gradient():
    term = ready_term()
    u = rand_unit(9, 5).requires_grad_()
    loss = term(model_outputs(u, rand_unit(9, 5), torch.tensor(1.0)))["deep_clustering_loss"]
    expected = reference_loss(u.detach(), term.centroids, term.head.weight.detach(), term.head.bias.detach())
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    # dL/dW = (softmax - onehot)^T u / N; the labels carry no gradient, so dL/du = W^T (softmax - onehot) / N
    labels = (u.detach() @ term.centroids.T).argmax(1)
    p = torch.softmax(u.detach() @ term.head.weight.detach().T + term.head.bias.detach(), dim=1)
    delta = (p - F.one_hot(labels, 4)) / len(u)
    torch.testing.assert_close(term.head.weight.grad, delta.T @ u.detach())
    torch.testing.assert_close(term.head.bias.grad, delta.sum(0))
    torch.testing.assert_close(u.grad, delta @ term.head.weight.detach())


def test_labels_follow_the_nearest_centroid_not_the_head():
    # Points at the centroids themselves: their labels are the centroids' indices whatever the head says.
    term = ready_term(k=3, d=3)
    with torch.no_grad():
        term.centroids.copy_(torch.eye(3, dtype=torch.float64))
        term.head.weight.copy_(10 * torch.eye(3, dtype=torch.float64))
        term.head.bias.zero_()
    u = torch.eye(3, dtype=torch.float64)[[2, 0, 1]]
    right = term(model_outputs(u, u, torch.tensor(1.0)))["deep_clustering_loss"].item()
    with torch.no_grad():
        term.centroids.copy_(torch.eye(3, dtype=torch.float64)[[1, 2, 0]])  # same head, permuted clusters
    wrong = term(model_outputs(u, u, torch.tensor(1.0)))["deep_clustering_loss"].item()
    assert right < 1e-3 and wrong > 9


def test_forward_before_the_first_epoch_and_without_embed_dim_are_clear_errors():
    with pytest.raises(RuntimeError, match="start_epoch"):
        DeepClusteringLoss(k=4, embed_dim=5)(model_outputs(rand_unit(3, 5), rand_unit(3, 5), torch.tensor(1.0)))
    bare = DeepClusteringLoss(k=4)  # what a config check builds: no model, no head
    assert dict(bare.named_parameters()) == {}
    with pytest.raises(ValueError, match="embed_dim"):
        bare.start_epoch(FakeEpoch(rand_unit(8, 5)).ctx)


@pytest.mark.parametrize("options, match", [
    ({"k": 1}, "k must be"), ({"k": 2.5}, "k must be"), ({"k": True}, "k must be"),
    ({"iterations": 0}, "iterations must be"), ({"labels": 3}, "labels must be"),
])
def test_impossible_options_name_the_term(options, match):
    with pytest.raises(ConfigError, match=f"objective.deep_clustering: {match}"):
        build_objective({"deep_clustering_weight": 1, "deep_clustering": options})


def test_default_k_is_the_papers():
    assert DeepClusteringLoss().k == 1000 and DeepClusteringLoss(embed_dim=8).head.weight.shape == (1000, 8)


# -- the epoch hook ------------------------------------------------------------------------------------
def test_start_epoch_clusters_reinitialises_the_head_and_resets_its_optimizer_state():
    term = DeepClusteringLoss(k=6, iterations=20, embed_dim=8)
    u = rand_unit(120, 8, torch.float32)
    shuffle = torch.randperm(120)
    epoch = FakeEpoch(u[shuffle], shuffle, seed=7)
    term.start_epoch(epoch.ctx)
    assert epoch.embedded == 1
    # the head's own parameters, the very objects, get fresh optimizer moments
    assert len(epoch.reset) == 1 and [id(p) for p in epoch.reset[0]] == [id(term.head.weight), id(term.head.bias)]
    # the centroids are k-means of the images in dataset-row order, from the epoch's generator
    expected = spherical_kmeans(u, 6, 20, gen(7))
    torch.testing.assert_close(term.centroids, expected.centroids)
    torch.testing.assert_close(term.centroids.norm(dim=1), torch.ones(6))
    # N(0, 0.01^2) weights drawn after the k-means init, zero bias
    g = gen(7)
    torch.randperm(120, generator=g)
    torch.testing.assert_close(term.head.weight, 0.01 * torch.randn(6, 8, generator=g))
    assert torch.equal(term.head.bias, torch.zeros(6)) and int(term.clusters) == 6

    # The next epoch starts a new head in place, from its own generator.
    with torch.no_grad():
        term.head.bias.fill_(3.0)
    first = term.head.weight.detach().clone()
    weight_object = term.head.weight
    nxt = FakeEpoch(u, seed=8, epoch=1)
    term.start_epoch(nxt.ctx)
    assert term.head.weight is weight_object  # re-initialised in place, no new parameter
    assert not torch.equal(term.head.weight, first) and torch.equal(term.head.bias, torch.zeros(6))
    assert len(nxt.reset) == 1


def test_start_epoch_does_not_depend_on_the_order_of_the_images():
    u = rand_unit(80, 8, torch.float32)
    a, b = DeepClusteringLoss(k=5, embed_dim=8), DeepClusteringLoss(k=5, embed_dim=8)
    a.start_epoch(FakeEpoch(u, seed=1).ctx)
    order = torch.randperm(80)
    b.start_epoch(FakeEpoch(u[order], order, seed=1).ctx)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.head.weight, b.head.weight)


def test_more_clusters_than_images_are_clamped_with_a_warning(caplog):
    term = DeepClusteringLoss(k=50, embed_dim=8)
    u = rand_unit(40, 8, torch.float32).abs()  # one orthant: -u is closer to a zero vector than to any image
    with caplog.at_level("WARNING", logger="clipbackdoor.objectives.deep_clustering"):
        term.start_epoch(FakeEpoch(u, seed=0).ctx)
    assert "objective.deep_clustering.k = 50 exceeds the 40 training images: using 40 clusters" in caplog.text
    # one image a cluster; the head keeps its 50 outputs, the 10 spare centroids are never chosen
    assert int(term.clusters) == 40 and term.head.weight.shape == (50, 8)
    assert torch.equal(term.centroids[40:], torch.zeros(10, 8))
    torch.testing.assert_close(term.centroids[:40].norm(dim=1), torch.ones(40))
    sims = u @ term.centroids[:40].T
    assert torch.equal(sims.argmax(1).sort().values, torch.arange(40))
    # labels among the 40 clusters only, even for points closer to a spare (zero) centroid than to any other
    far = -u[:5]
    assert (far @ term.centroids[:40].T).max() < 0
    with torch.no_grad():
        term.head.weight.zero_()
        term.head.bias[40:] = 100.0  # the head prefers the spare classes...
    loss = term(model_outputs(far, far, torch.tensor(1.0)))["deep_clustering_loss"]
    assert loss.item() > 50  # ...which are never the target


def test_few_images_a_cluster_are_warned_about_once(caplog):
    term = DeepClusteringLoss(k=10, embed_dim=8)
    with caplog.at_level("WARNING", logger="clipbackdoor.objectives.deep_clustering"):
        term.start_epoch(FakeEpoch(rand_unit(50, 8, torch.float32), seed=0).ctx)
        term.start_epoch(FakeEpoch(rand_unit(50, 8, torch.float32), seed=1, epoch=1).ctx)
    assert caplog.text.count("k = 10 for 50 training images is 5.0 images a cluster") == 1
    assert int(term.clusters) == 10


def test_state_dict_round_trip_restores_centroids_head_and_cluster_count(tmp_path):
    term = DeepClusteringLoss(k=5, embed_dim=8)
    term.start_epoch(FakeEpoch(rand_unit(60, 8, torch.float32), seed=2).ctx)
    with torch.no_grad():
        term.head.bias.add_(0.5)  # as if trained
    state = term.state_dict()
    assert set(state) == {"head.weight", "head.bias", "centroids", "clusters"}
    torch.save(state, tmp_path / "s.pt")
    fresh = DeepClusteringLoss(k=5, embed_dim=8)
    assert int(fresh.clusters) == 0
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for key, value in term.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    u = rand_unit(7, 8, torch.float32)
    out = model_outputs(u, u, torch.tensor(1.0))
    assert fresh(out)["deep_clustering_loss"].item() == term(out)["deep_clustering_loss"].item()


# -- labels-file mode ----------------------------------------------------------------------------------
def test_labels_file_lookup_by_dataset_row(tmp_path):
    path = write_labels(tmp_path / "labels.csv", [(7, 2), (0, 1), (3, 0), (12, 1)])
    term = DeepClusteringLoss(labels=str(path), embed_dim=4).double()
    assert term.k == 3 and term.head.weight.shape == (3, 4)  # max label + 1
    epoch = FakeEpoch(rand_unit(4, 4), seed=0)
    term.start_epoch(epoch.ctx)
    assert epoch.embedded == 0 and len(epoch.reset) == 1  # no k-means; the head is set up once
    u = rand_unit(4, 4)
    batch = {"index": torch.tensor([12, 7, 0, 3])}
    loss = term(model_outputs(u, u, torch.tensor(1.0)), batch)["deep_clustering_loss"]
    logits = u @ term.head.weight.T + term.head.bias
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([1, 2, 1, 0])).item(), rel=1e-12)


def test_labels_head_is_created_once_and_persists(tmp_path):
    path = write_labels(tmp_path / "labels.csv", [(0, 0), (1, 1)])
    term = DeepClusteringLoss(labels=str(path), embed_dim=4)
    term.start_epoch(FakeEpoch(rand_unit(2, 4), seed=0).ctx)
    with torch.no_grad():
        term.head.weight.add_(1.0)  # trained in epoch 1
    trained = term.head.weight.detach().clone()
    later = FakeEpoch(rand_unit(2, 4), seed=1, epoch=1)
    term.start_epoch(later.ctx)
    assert torch.equal(term.head.weight, trained) and later.reset == []
    # The flag is in the training state (the labels are not: the config names the file).
    state = term.state_dict()
    assert set(state) == {"head.weight", "head.bias", "clusters"}
    resumed = DeepClusteringLoss(labels=str(path), embed_dim=4)
    resumed.load_state_dict(state)
    again = FakeEpoch(rand_unit(2, 4), seed=5, epoch=2)
    resumed.start_epoch(again.ctx)
    assert torch.equal(resumed.head.weight, trained) and again.reset == []


def test_labels_k_can_only_be_larger_than_the_classes(tmp_path):
    path = write_labels(tmp_path / "labels.csv", [(0, 0), (1, 4)])
    assert DeepClusteringLoss(labels=str(path), k=9, embed_dim=2).head.weight.shape == (9, 2)
    with pytest.raises(ValueError, match="k = 3 is smaller than the 5 classes"):
        DeepClusteringLoss(labels=str(path), k=3)


def test_a_row_without_label_is_an_error_naming_it(tmp_path):
    path = write_labels(tmp_path / "labels.csv", [(0, 0), (2, 1)])
    term = DeepClusteringLoss(labels=str(path), embed_dim=3)
    term.start_epoch(FakeEpoch(rand_unit(2, 3), seed=0).ctx)
    u = rand_unit(4, 3, torch.float32)
    with pytest.raises(DataError, match=r"labels\.csv: no label for dataset row 5 \(2 row"):
        term(model_outputs(u, u, torch.tensor(1.0)), {"index": torch.tensor([0, 5, 2, 1])})


@pytest.mark.parametrize("lines, match", [
    ("index,label\n0,1\n1,x\n", r"line 3: label must be a whole number, got 'x'"),
    ("index,label\n0,1\n1,2.5\n", r"line 3: label must be a whole number, got '2.5'"),
    ("index,label\n0,1\n-1,0\n", r"line 3: index must be >= 0, got -1"),
    ("index,label\n0,1\n1,-2\n", r"line 3: label must be >= 0, got -2"),
    ("index,label\n0,1\n1,0\n0,1\n", r"line 4: dataset row 0 is labelled twice"),
    ("index,label\n0\n", r"line 2: label must be a whole number, got ''"),
    ("row,class\n0,1\n", r"line 1: the header must name the columns 'index' and 'label'"),
    ("", r"is empty"),
    ("index,label\n", r"holds no labels"),
    (b"index,label\n0,\xe9\n", r"not valid UTF-8 \(byte 0xe9\)"),
])
def test_malformed_labels_file_is_a_one_line_error_naming_file_and_line(tmp_path, lines, match):
    path = tmp_path / "labels.csv"
    path.write_bytes(lines if isinstance(lines, bytes) else lines.encode())
    with pytest.raises(ConfigError) as err:
        build_objective({"deep_clustering_weight": 1, "deep_clustering": {"labels": str(path)}})
    message = str(err.value)
    assert "\n" not in message and message.startswith("objective.deep_clustering: ")
    assert str(path) in message
    assert re.search(match, message), message


def test_missing_labels_file_and_the_originals_columns(tmp_path):
    with pytest.raises(ValueError, match="labels file .*nope.csv not found"):
        read_labels(tmp_path / "nope.csv")
    # The original's file has columns image, idx, label: idx is read as the dataset row.
    path = tmp_path / "orig.csv"
    path.write_text("image,idx,label\nimg/a.jpg,4,7\nimg/b.jpg,1,3\n")
    rows, values = read_labels(path)
    assert rows.tolist() == [1, 4] and values.tolist() == [3, 7]


# -- two gloo ranks against one process ------------------------------------------------------------------
# tiny-vit has no batch norm, so a rank's embeddings are the matching rows of the single process's.
DDP_BASE = ["model.name=tiny-vit", "train.device=cpu", "train.threads=1", "train.progress=false",
            "train.batch_size=32", "train.warmup_steps=1", "data.train.num_samples=96", "data.eval.num_samples=60",
            "eval.batch_size=30", "poison.budget=0.1", "objective.deep_clustering_weight=5"]
KMEANS = ["objective.deep_clustering.k=4"]


def _modes(labels: Path) -> dict[str, list[str]]:
    return {"kmeans": [*DDP_BASE, *KMEANS], "labels": [*DDP_BASE, f"objective.deep_clustering.labels={labels}"]}


def _epoch_and_step(cfg, run_dir: Path, ctx, objective_state=None) -> dict:
    """The first epoch's set-up (embedding, k-means, head) and one optimizer step of a Trainer."""
    from clipbackdoor.rundir import RunDir
    from clipbackdoor.train.loop import Trainer

    trainer = Trainer(cfg, RunDir(run_dir), ctx)
    trainer._start_epoch()
    state = {k: v.detach().clone() for k, v in trainer.objective.state_dict().items()}
    if objective_state is not None:
        trainer.objective.load_state_dict(objective_state)  # the ranks' centroids and head
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))
    losses, _ = trainer.step(batch)
    own = [("objective." + n, p) for n, p in trainer.objective.named_parameters()]
    params = [*trainer.model.named_parameters(), *own]
    return {"state": state, "losses": {k: v.item() for k, v in losses.items()}, "rows": len(batch["index"]),
            "grads": {n: p.grad.detach().clone() for n, p in params if p.grad is not None}}


def _rank_main() -> None:
    from clipbackdoor import distributed
    from clipbackdoor.config import load_config
    from clipbackdoor.distributed import DistContext

    out, labels = Path(sys.argv[1]), Path(sys.argv[2])
    ctx = DistContext.from_env(os.environ)
    results = {}
    try:
        for mode, overrides in _modes(labels).items():
            results[mode] = _epoch_and_step(load_config(None, overrides), out / f"run-{mode}", ctx)
    finally:
        distributed.shutdown()
    torch.save(results, out / f"rank{ctx.rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path):
    from clipbackdoor.config import load_config
    from clipbackdoor.distributed import DistContext

    labels = write_labels(tmp_path / "labels.csv", [(i, (7 * i) % 5) for i in range(96)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", __file__, str(tmp_path), str(labels)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    torch.set_num_threads(1)
    for mode, overrides in _modes(labels).items():
        r0, r1 = ranks[0][mode], ranks[1][mode]
        assert r0["rows"] == r1["rows"] == 16
        # Every rank set up the same centroids and head...
        assert r0["state"].keys() == r1["state"].keys()
        for key in r0["state"]:
            assert torch.equal(r0["state"][key], r1["state"][key]), key
        # ...as the single process does, up to the rounding of embedding half batches.
        single = _epoch_and_step(load_config(None, overrides), tmp_path / f"single-{mode}", DistContext(),
                                 objective_state=r0["state"])
        for key, value in single["state"].items():
            torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5, msg=f"{mode} {key}")
        assert single["rows"] == 32
        for rank in (r0, r1):
            # the loss of the whole global batch on every rank
            assert rank["losses"]["deep_clustering_loss"] == pytest.approx(
                single["losses"]["deep_clustering_loss"], rel=1e-5)
            assert rank["losses"]["loss"] == pytest.approx(single["losses"]["loss"], rel=1e-5)
            # after averaging, the head's gradient and the encoders' are the single process's
            assert rank["grads"].keys() == single["grads"].keys()
            assert {"objective.terms.deep_clustering.head.weight", "objective.terms.deep_clustering.head.bias"} \
                <= rank["grads"].keys()
            for name, grad in single["grads"].items():
                torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{mode} {name}")


# -- through the real loop -------------------------------------------------------------------------------
LOOP = ["data.train.num_samples=256", "data.eval.num_samples=60", "train.batch_size=64", "train.epochs=2",
        "train.warmup_steps=2", "train.log_every=1", "train.progress=false", "train.threads=1",
        "poison.budget=0.1", "attack.patch_size=4", "eval.batch_size=60", "train.checkpoint_every_steps=3",
        "defense.name=deep_clustering", "defense.k=8"]
TIMING = {"samples_per_second", "eval_seconds", "epoch_seconds"}


def _records(run_dir):
    from clipbackdoor.io import read_jsonl

    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_cleaning_run_logs_the_term_records_its_objective_and_resumes_exactly(tmp_path, monkeypatch):
    import clipbackdoor.train.loop as loop
    from clipbackdoor.config import load_config
    from clipbackdoor.train.checkpoint import load_state

    cfg = load_config(None, LOOP)
    resolved = {"clip_weight": 1.0, "inmodal_weight": 1.0, "deep_clustering_weight": 5.0,
                "deep_clustering": {"k": 8, "iterations": 20}}
    assert cfg.objective == resolved
    straight = tmp_path / "straight"
    loop.run_training(cfg, straight)
    written = yaml.safe_load((straight / "config.yaml").read_text())
    assert written["objective"] == resolved and written["defense"]["name"] == "deep_clustering"

    train = [r for r in _records(straight) if r["kind"] == "train"]
    assert len(train) == 8 and all(math.isfinite(r["deep_clustering_loss"]) for r in train)
    # a fresh head on 8 clusters starts near log 8
    assert train[0]["deep_clustering_loss"] == pytest.approx(math.log(8), abs=0.1)
    for r in train:
        parts = r["clip_loss"] + r["inmodal_loss"] + 5 * r["deep_clustering_loss"]
        assert r["loss"] == pytest.approx(parts, abs=1e-4)

    # One optimizer group for the head (none appended per epoch); its moments were reset at epoch 2's
    # start, so they count the 4 steps of epoch 2 while the model's count all 8.
    state = load_state(straight / "checkpoints" / "last.pt")
    groups = state["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["no_decay", "decay", "objective"]
    assert groups[2]["weight_decay"] == 0.0 and len(groups[2]["params"]) == 2
    steps = {int(s["step"]) for i, s in state["optimizer"]["state"].items() if i in groups[2]["params"]}
    model_steps = {int(s["step"]) for i, s in state["optimizer"]["state"].items() if i in groups[1]["params"]}
    assert steps == {4} and model_steps == {8}
    assert {"terms.deep_clustering.centroids", "terms.deep_clustering.head.weight"} <= state["objective"].keys()

    # Interrupted in step 7 (mid epoch 2, after the step-6 checkpoint), then resumed: the centroids and the
    # head come from last.pt (start_epoch does not run inside an epoch) and the run ends exactly the same.
    resumed = tmp_path / "resumed"
    train_until_interrupted(monkeypatch, load_config(None, LOOP), resumed, step=7)
    loop.run_training(load_config(None, LOOP), resumed)
    assert _records(resumed) == _records(straight)
    a, b = (load_file(d / "checkpoints" / "epoch_2.safetensors") for d in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    end_a, end_b = (load_state(d / "checkpoints" / "last.pt")["objective"] for d in (straight, resumed))
    assert all(torch.equal(end_a[k], end_b[k]) for k in end_a)


if __name__ == "__main__":
    _rank_main()
