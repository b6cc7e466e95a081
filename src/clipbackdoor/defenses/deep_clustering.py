"""Deep clustering: CleanCLIP cleaning plus a cross-entropy on per-epoch k-means pseudo-labels.

Verma et al., "Effective Backdoor Mitigation Depends on the Pre-training Objective", arXiv:2311.14948
(the deep-clustering variant of their cleaning study; AC ``--deep_clustering --deep_clustering_weight 5``):

    L = clip_weight * L_MMCL + inmodal_weight * L_SSL + weight * L_DC,

with L_DC the ``deep_clustering`` objective term (``objectives/deep_clustering.py``): at the start of every
epoch spherical k-means of the cleaning images' embeddings into k clusters (``iterations`` iterations) and a
fresh linear head; every step the cross-entropy of the head on each image's nearest-centroid label. The
paper's settings: weights 1, 1 and 5, k = 1000 for 100K cleaning images, 20 iterations, 10 epochs. Keep
about 100 images a cluster at other scales (k of 10 to 50 for a few thousand images); k may not exceed the
number of cleaning images.

``labels`` (a CSV of ``index,label``, one label per dataset row) is the paper's "cheating" experiment:
fixed labels from elsewhere (zero-shot labels of a strong model) instead of k-means, one head for the whole
run; ``k`` then defaults to the number of classes in the file.
"""

from __future__ import annotations

from typing import Any

from clipbackdoor.defenses.base import DEFENSES, Defense
from clipbackdoor.registry import ConfigError

#: The paper's number of clusters, for 100K cleaning images (objectives.deep_clustering.DEFAULT_K).
PAPER_K = 1000


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


@DEFENSES.register("deep_clustering")
class DeepClustering(Defense):
    def __init__(self, clip_weight: float = 1.0, inmodal_weight: float = 1.0, weight: float = 5.0,
                 k: int | None = None, iterations: int = 20, labels: str | None = None) -> None:
        for name, value in (("clip_weight", clip_weight), ("inmodal_weight", inmodal_weight), ("weight", weight)):
            if not _number(value) or value < 0:
                raise ConfigError(f"defense.{name}: must be a number >= 0, got {value!r}")
        if k is not None and (not _whole(k) or k < 2):
            raise ConfigError(f"defense.k: must be a whole number >= 2 (clusters), got {k!r}")
        if not _whole(iterations) or iterations < 1:
            raise ConfigError(f"defense.iterations: must be a whole number >= 1, got {iterations!r}")
        if labels is not None and not isinstance(labels, str):
            raise ConfigError(f"defense.labels: must be the path of a CSV file (index,label), got {labels!r}")
        self.clip_weight, self.inmodal_weight, self.weight = clip_weight, inmodal_weight, weight
        self.k, self.iterations, self.labels = k, iterations, labels

    def config(self) -> dict[str, Any]:
        term: dict[str, Any] = {}
        if self.labels is None:
            # k-means: the resolved number of clusters, so that config.yaml records it.
            term["k"] = PAPER_K if self.k is None else self.k
        elif self.k is not None:
            # Given labels: k defaults to the file's number of classes, which only the term reads.
            term["k"] = self.k
        term["iterations"] = self.iterations
        if self.labels is not None:
            term["labels"] = self.labels
        return {"objective": {"clip_weight": self.clip_weight, "inmodal_weight": self.inmodal_weight,
                              "deep_clustering_weight": self.weight, "deep_clustering": term}}
