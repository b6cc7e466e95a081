"""Brute-force references for the contrastive losses, shared by the objective tests."""

import math

import torch


def rand_unit(n: int, d: int, dtype=torch.float64) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=dtype), dim=-1)


def ref_ce_rows(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> float:
    """mean_i [ -log softmax_j(s <q_i, k_j>)[i] ], written out with scalar arithmetic."""
    q, k = queries.tolist(), keys.tolist()
    total = 0.0
    for i, qi in enumerate(q):
        logits = [scale * sum(a * b for a, b in zip(qi, kj)) for kj in k]
        total += -(logits[i] - math.log(sum(math.exp(z) for z in logits)))
    return total / len(q)
