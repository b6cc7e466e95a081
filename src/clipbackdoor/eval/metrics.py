"""Pure metric functions on logits; no models, no loops (tested against hand-computed cases)."""

from __future__ import annotations

import torch


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Bool (N,): whether ``labels[i]`` is among the top-k of ``logits[i]`` (N, C)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def attack_hits(logits: torch.Tensor, target: int, k: int) -> torch.Tensor:
    """Bool (N,): whether the target class is among the top-k predictions of triggered images (N, C)."""
    return topk_hits(logits, torch.full((len(logits),), target, device=logits.device), k)


def asr_mask(labels: torch.Tensor, target: int) -> torch.Tensor:
    """Images that count for ASR: those whose true class is not the target (a triggered banana predicted
    as banana is a correct prediction, not an attack success)."""
    return labels != target


def find_target(classnames: tuple[str, ...] | list[str], target: str) -> int:
    """Index of the target class: an exact (case-insensitive) match, else the first name containing it."""
    lowered = [c.lower() for c in classnames]
    t = target.lower()
    if t in lowered:
        return lowered.index(t)
    for i, c in enumerate(lowered):
        if t in c:
            return i
    raise ValueError(
        f"attack target {target!r} is not a class of the evaluation set "
        f"({', '.join(classnames[:10])}{', ...' if len(classnames) > 10 else ''}); set attack.target"
    )
