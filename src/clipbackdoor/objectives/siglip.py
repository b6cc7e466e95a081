"""SigLIP: the sigmoid pairwise image-text loss.

Zhai et al., "Sigmoid Loss for Language Image Pre-Training", arXiv:2303.15343.

With U, V the normalised image and text embeddings of the global batch (N rows each), s the model's learned
scale (the same s = exp(logit_scale) that the CLIP term uses) and b an optional learned bias:

    z_ij = s <u_i, v_j> + b,     y_ij = +1 if i == j else -1,

    L = -1/N^2 sum_i sum_j log sigmoid(y_ij z_ij)        (this term: the mean over all N^2 pairs)

Every pair is an independent binary classification: the N matched pairs are positives, the N^2 - N others
negatives; there is no softmax over the batch.

Normalisation. The SigLIP paper (and big_vision's code) divides the double sum by N only,

    L_SigLIP = -1/N sum_i sum_j log sigmoid(y_ij z_ij) = N * L,

i.e. a sum over each row's N pairs, averaged over the rows. This term follows the code of the paper we
reproduce ("AC"), which takes the mean over all N^2 entries: L = L_SigLIP / N. At a fixed global batch
the two differ by the constant factor N, which a term weight can absorb; the anchor's default mixing weight
is ``siglip_weight: 0.1`` (objectives.composite applies it).

The AC variant also keeps the model's shared scale s (initialised as CLIP's, 1/0.07) and no bias. SigLIP
itself learns its own scale (init 10) and a bias b (init -10, so that the many negatives do not dominate
the first steps). ``bias: true`` adds such a b, a scalar ``logit_bias`` parameter of this term (trained
without weight decay and saved in the training state with the objective), initialised to ``init_bias``.
A ``logit_bias`` in the model's output (open_clip's SigLIP architectures) is not used.

Under data parallelism every rank gathers U and V and computes the full N x N loss, as the CLIP term does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from clipbackdoor.objectives.base import OBJECTIVES, Term
from clipbackdoor.objectives.distributed import gather_features


def sigmoid_pairwise(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """-mean over all (i, j) of log sigmoid(y_ij (s <u_i, v_j> + b)), y = +1 on the diagonal, -1 elsewhere."""
    logits = scale * image @ text.T
    if bias is not None:
        logits = logits + bias
    n = len(logits)
    labels = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(labels * logits).mean()


@OBJECTIVES.register("siglip")
class SigLipLoss(Term):
    """Sigmoid pairwise loss over the global batch, mean over all N^2 pairs; optional learned bias."""

    def __init__(self, bias: bool = False, init_bias: float = -10.0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be true or false, got {bias!r}")
        if isinstance(init_bias, bool) or not isinstance(init_bias, (int, float)) or not math.isfinite(init_bias):
            raise ValueError(f"init_bias must be a finite number, got {init_bias!r}")
        self.rank, self.world_size = rank, world_size
        self.logit_bias = torch.nn.Parameter(torch.tensor(float(init_bias))) if bias else None

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        bias = self.logit_bias
        if "logit_bias" in out:
            # A SigLIP architecture (open_clip's ViT-B-16-SigLIP, ...) learns its own bias; use that one.
            if bias is not None:
                raise ValueError("objective.siglip.bias: the model has a logit_bias of its own; set bias: false")
            bias = out["logit_bias"]
        u = gather_features(out["image_features"], self.rank, self.world_size)
        v = gather_features(out["text_features"], self.rank, self.world_size)
        return {"siglip_loss": sigmoid_pairwise(u, v, out["logit_scale"], bias)}
