"""Deep clustering: a cross-entropy on k-means pseudo-labels of the image embeddings.

Verma et al., "Effective Backdoor Mitigation Depends on the Pre-training Objective", arXiv:2311.14948
(the deep-clustering cleaning variant; Caron et al.'s DeepCluster, arXiv:1807.05520, is the idea).

At the start of every epoch the training (cleaning) images are embedded (original views, no gradient),
L2-normalised and clustered by spherical k-means into k clusters (20 iterations); a fresh linear head
h(u) = W u + b, W ~ N(0, 0.01^2) of shape (k, D), b = 0, with fresh optimizer moments and no weight decay,
learns to predict each image's cluster:

    L = mean_i CE(h(u_i), c_i),     c_i = argmax_j <u_i, m_j>

with u_i the current (grad-carrying) embedding of image i of the global batch and m_j the epoch's fixed
centroids; the labels carry no gradient. The anchor paper adds it to CleanCLIP's objective with weight 5
(``defenses.deep_clustering``) and uses k = 1000 for 100K cleaning images.

Choosing k. The paper's k = 1000 for 100K images is about 100 images a cluster. Keep that ratio at other
scales: at demo scale (a few thousand synthetic images of 10 classes) k of about 10 to 50. A k larger than
the number of training images N is clamped to N for the epoch, with a logged warning (one image a cluster:
instance discrimination rather than clustering; the head keeps its k outputs, the last k - N never a
target), so that a tiny run with the default k still trains; fewer than 10 images a cluster is warned about
too.

Spherical k-means (``spherical_kmeans``), deterministic given ``EpochContext.generator``: the initial
centroids are k distinct images drawn with the generator; an iteration assigns every image to the centroid
of largest cosine and moves each centroid to the normalised mean of its images. An empty cluster is
re-seeded at the image farthest from its own centroid (lowest cosine; among clusters of two or more images,
as scikit-learn relocates empty clusters); when no such image is left it keeps its previous centroid.
Iterations stop early once an assignment repeats without an empty cluster (the result is then what the
remaining iterations would give). The images are put in dataset-row order first, so the clustering does not
depend on the epoch's shuffle or on the number of ranks. Cluster sums are one-hot matrix products, not
atomic scatters, so that every rank computes the same centroids; under DDP rank 0's are broadcast as well,
which makes identical centroids (and so identical labels) on every rank a guarantee rather than an assumption
about GPU kernels. The epoch's generator draws the k initial images first, then the head's weights.

What differs from the original code (AC ``src/train.py``, ``--deep_clustering``):

* It embedded the images through the unwrapped model with a fresh DataLoader of its own and ran faiss on
  one process, so it only worked on one GPU. Here every rank embeds its shard, the embeddings are gathered
  (``EpochContext.embed_images``), every rank clusters the same matrix, and each rank computes the loss of
  the global batch (gathered embeddings), so the head gets the full batch's gradient on every rank.
* It appended a new parameter group with a new head to the optimizer every epoch; the old heads stayed in
  the optimizer. Here one head of fixed shape (k, D) is re-initialised in place every epoch and its AdamW
  moments are reset (``EpochContext.reset_optimizer_state``).
* The head, the centroids and the number of clusters in use (0 until the head is set up) are saved in the
  training state, so a run resumed inside an epoch continues with the same centroids and head
  (``start_epoch`` does not run there).

"Cheating" variant (``labels``): the pseudo-labels come from a CSV file, one label per dataset row (the
paper used zero-shot ImageNet labels of each cleaning image from a strong SigLIP model), instead of
k-means; the head is created once, at the first epoch, and kept for the whole run. Format: a header with
the columns ``index`` (the dataset row; ``idx`` is accepted too) and ``label`` (an integer >= 0), one row
per image; other columns are ignored. k is then the number of classes, max label + 1, unless ``k`` is set
larger. The labels are read when the term is built (a malformed file is a one-line error naming the file
and line) and are not part of the training state: the config names the file.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clipbackdoor.errors import DataError
from clipbackdoor.objectives.base import OBJECTIVES, EpochContext, Term
from clipbackdoor.objectives.distributed import gather_features

log = logging.getLogger(__name__)

#: The paper's number of clusters (100K cleaning images).
DEFAULT_K = 1000
#: Rows x clusters per chunk of the similarity and one-hot matrices (64 MiB in fp32).
_CHUNK_ELEMENTS = 1 << 24
_INTEGER = re.compile(r"[+-]?\d+")


class KMeansResult(NamedTuple):
    centroids: torch.Tensor  # (k, D), unit norm
    assignments: torch.Tensor  # (N,) the last assignment computed
    iterations: int  # iterations run (<= the number asked for)
    reseeded: int  # empty clusters re-seeded, over all iterations


def spherical_kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> KMeansResult:
    """Spherical k-means of the unit-norm rows of ``x`` (N, D): deterministic given ``generator`` (a CPU
    generator; it draws the k distinct initial rows). See the module docstring for empty clusters."""
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} clusters need between 1 and {n} points")
    c = x[torch.randperm(n, generator=generator)[:k].to(x.device)].clone()
    previous = None
    reseeded = 0
    done = 0
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    for done in range(1, iterations + 1):
        assign, sim = _assign(x, c)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if previous is not None and not bool(empty.any()) and torch.equal(assign, previous):
            done -= 1  # nothing moves any more: this pass changed nothing
            break
        previous = assign
        sums = _cluster_sums(x, assign, k)
        norms = sums.norm(dim=1, keepdim=True)
        c = torch.where(norms > 1e-12, sums / norms.clamp_min(1e-12), c)
        empty_ids = empty.nonzero().flatten()
        if len(empty_ids):
            # The images farthest from their centroids, from clusters that keep at least one image.
            eligible = counts[assign] > 1
            score = torch.where(eligible, sim, torch.full_like(sim, float("inf")))
            far = torch.argsort(score, stable=True)[: len(empty_ids)]
            usable = eligible[far]
            c[empty_ids[usable]] = x[far[usable]]
            reseeded += int(usable.sum())
    return KMeansResult(c, assign, done, reseeded)


def _chunk_rows(k: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(k, 1))


def _assign(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid by cosine (the first on ties) and that cosine, for every row of ``x``."""
    best, sims = [], []
    step = _chunk_rows(len(c))
    for start in range(0, len(x), step):
        sim, idx = (x[start : start + step] @ c.T).max(dim=1)
        best.append(idx)
        sims.append(sim)
    return torch.cat(best), torch.cat(sims)


def _cluster_sums(x: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums of the rows of ``x`` as one-hot products in a fixed order (deterministic on GPUs,
    unlike an atomic ``index_add_``)."""
    sums = x.new_zeros(k, x.shape[1])
    step = _chunk_rows(k)
    for start in range(0, len(x), step):
        a = assign[start : start + step]
        onehot = torch.zeros(len(a), k, dtype=x.dtype, device=x.device)
        onehot[torch.arange(len(a), device=x.device), a] = 1
        sums += onehot.T @ x[start : start + step]
    return sums


def read_labels(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A labels CSV (``index,label``) -> (dataset rows, sorted ascending; their labels), int64 tensors.

    Raises ValueError naming the file and line for a missing file, a missing column, a value that is not a
    whole number, a negative one or an index given twice.
    """
    path = Path(path)
    table: dict[int, int] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"labels file {path} is empty; it needs a header 'index,label' and one row per image")
            names = [h.strip().lower() for h in header]
            column = {name: names.index(name) for name in ("index", "idx", "label") if name in names}
            if "label" not in column or ("index" not in column and "idx" not in column):
                raise ValueError(f"{path}: line 1: the header must name the columns 'index' and 'label', "
                                 f"got {','.join(header)!r}")
            at = {"index": column.get("index", column.get("idx")), "label": column["label"]}
            for row in reader:
                if not row or all(not field.strip() for field in row):
                    continue
                values = {}
                for name, col in at.items():
                    field = row[col].strip() if col < len(row) else ""
                    if not _INTEGER.fullmatch(field):
                        raise ValueError(f"{path}: line {reader.line_num}: {name} must be a whole number, "
                                         f"got {field!r}")
                    values[name] = int(field)
                    if values[name] < 0:
                        raise ValueError(f"{path}: line {reader.line_num}: {name} must be >= 0, got {field}")
                if values["index"] in table:
                    raise ValueError(f"{path}: line {reader.line_num}: dataset row {values['index']} is "
                                     "labelled twice")
                table[values["index"]] = values["label"]
    except FileNotFoundError:
        raise ValueError(f"labels file {path} not found") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{err.object[err.start]:02x}); save the file as "
                         "UTF-8") from None
    except csv.Error as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from None
    except OSError as err:
        raise ValueError(f"labels file {path} cannot be read: {err.strerror or err}") from None
    if not table:
        raise ValueError(f"labels file {path} holds no labels")
    rows = torch.tensor(sorted(table), dtype=torch.long)
    return rows, torch.tensor([table[r] for r in rows.tolist()], dtype=torch.long)


@OBJECTIVES.register("deep_clustering")
class DeepClusteringLoss(Term):
    """Cross-entropy of a linear head on per-epoch spherical k-means pseudo-labels (or on given labels)."""

    def __init__(self, k: int | None = None, iterations: int = 20, labels: str | None = None,
                 rank: int = 0, world_size: int = 1, embed_dim: int | None = None) -> None:
        super().__init__()
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise ValueError(f"k must be a whole number >= 2 (clusters), got {k!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a whole number >= 1, got {iterations!r}")
        if labels is not None and not isinstance(labels, (str, Path)):
            raise ValueError(f"labels must be the path of a CSV file (index,label), got {labels!r}")
        if embed_dim is not None and (isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1):
            raise ValueError(f"embed_dim must be a whole number >= 1, got {embed_dim!r}")
        self.rank, self.world_size, self.embed_dim = rank, world_size, embed_dim
        self.iterations = iterations
        self.labels_path = None if labels is None else str(labels)
        if self.labels_path is None:
            self.k = DEFAULT_K if k is None else k
        else:
            rows, values = read_labels(self.labels_path)
            classes = int(values.max()) + 1
            if k is not None and k < classes:
                raise ValueError(f"k = {k} is smaller than the {classes} classes of {self.labels_path} (max label + 1)")
            self.k = classes if k is None else k
            if self.k < 2:
                raise ValueError(f"{self.labels_path}: every label is 0; the head needs at least 2 classes")
            # Read from the file named by the config, not saved in the training state.
            self.register_buffer("label_rows", rows, persistent=False)
            self.register_buffer("label_values", values, persistent=False)
        # Saved in the training state: the classes the head is trained on (the epoch's clusters, min(k, N), or
        # k given labels); 0 until start_epoch has set the head up.
        self.register_buffer("clusters", torch.zeros((), dtype=torch.long))
        self._warned = False
        self.head: torch.nn.Linear | None = None
        if embed_dim is not None:
            # Zeros, not nn.Linear's random init: building the term must not draw from the global generator.
            self.head = torch.nn.utils.skip_init(torch.nn.Linear, embed_dim, self.k)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
            if self.labels_path is None:
                self.register_buffer("centroids", torch.zeros(self.k, embed_dim))

    def extra_repr(self) -> str:
        source = f"labels={self.labels_path!r}" if self.labels_path else f"iterations={self.iterations}"
        return f"k={self.k}, {source}, embed_dim={self.embed_dim}"

    def _require_head(self) -> torch.nn.Linear:
        if self.head is None:
            raise ValueError("objective.deep_clustering: needs the model's embedding size; build the objective "
                             "with build_objective(..., embed_dim=...) (the training loop does)")
        return self.head

    # -- every epoch ------------------------------------------------------------------------------------
    def start_epoch(self, epoch: EpochContext) -> None:
        head = self._require_head()
        if self.labels_path is not None:
            if int(self.clusters) == 0:
                self._init_head(head, epoch, self.k)  # once: the head persists over the run
            return
        u, rows = epoch.embed_images()
        x = F.normalize(u[torch.argsort(rows)].to(self.centroids.dtype), dim=1)
        n = len(x)
        if n == 0:
            raise ValueError("deep_clustering: there are no training images to cluster")
        k = min(self.k, n)
        if self.rank == 0 and not self._warned and n < 10 * self.k:
            self._warned = True
            what = (f"exceeds the {n} training images: using {n} clusters, one image each" if k < self.k else
                    f"for {n} training images is {n / k:.1f} images a cluster")
            log.warning("objective.deep_clustering.k = %d %s; the paper has about 100 images a cluster (k = 1000 for "
                        "100K images): set defense.k (or objective.deep_clustering.k) to about %d", self.k, what,
                        max(2, n // 100))
        result = spherical_kmeans(x, k, self.iterations, epoch.generator)
        centroids = result.centroids.contiguous()
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.broadcast(centroids, src=0)
        with torch.no_grad():
            self.centroids.zero_()
            self.centroids[:k] = centroids
        self._init_head(head, epoch, k)
        if self.rank == 0:
            sizes = torch.bincount(result.assignments, minlength=k)
            log.info("deep_clustering: epoch %d: %d images in %d clusters (%d to %d images each) after %d "
                     "k-means iterations, %d empty clusters re-seeded", epoch.epoch + 1, n, k,
                     int(sizes.min()), int(sizes.max()), result.iterations, result.reseeded)

    def _init_head(self, head: torch.nn.Linear, epoch: EpochContext, clusters: int) -> None:
        """W ~ N(0, 0.01^2), b = 0 (the original's init), in place, with fresh optimizer moments."""
        weight = torch.randn(head.weight.shape, generator=epoch.generator, dtype=torch.float32) * 0.01
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.zero_()
            self.clusters.fill_(clusters)
        epoch.reset_optimizer_state(list(head.parameters()))

    # -- every step --------------------------------------------------------------------------------------
    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        head = self._require_head()
        clusters = int(self.clusters)
        if clusters == 0:
            raise RuntimeError("deep_clustering: start_epoch has not set the head up (a run's first epoch calls "
                               "it; a resumed run restores it from the training state)")
        u = gather_features(out["image_features"], self.rank, self.world_size)
        if self.labels_path is None:
            with torch.no_grad():
                labels = (u.detach().to(self.centroids.dtype) @ self.centroids[:clusters].T).argmax(dim=1)
        else:
            labels = self._given_labels(batch, u.device)
        logits = head(u.to(head.weight.dtype))
        return {"deep_clustering_loss": F.cross_entropy(logits, labels)}

    def _given_labels(self, batch: Mapping[str, Any] | None, device: torch.device) -> torch.Tensor:
        if batch is None or "index" not in batch:
            raise ValueError("deep_clustering with a labels file needs the batch's dataset rows (batch['index'])")
        index = torch.as_tensor(batch["index"]).to(device=device, dtype=torch.long)
        index = gather_features(index, self.rank, self.world_size)
        rows = self.label_rows.to(device)
        at = torch.searchsorted(rows, index).clamp(max=len(rows) - 1)
        found = rows[at] == index
        if not bool(found.all()):
            missing = index[~found]
            raise DataError(f"{self.labels_path}: no label for dataset row {int(missing[0])} "
                            f"({len(missing)} row(s) of this batch have none); it needs one row per training image")
        return self.label_values.to(device)[at]
