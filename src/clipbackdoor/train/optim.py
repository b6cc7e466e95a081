"""AdamW with CLIP's two parameter groups."""

from __future__ import annotations

import torch


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm weights, biases, embeddings' scale-like 1-d tensors and the logit scale get no weight decay
    (CLIP, CleanCLIP: names containing bn/ln/bias/logit_scale; any 1-d tensor is a gain or a bias)."""
    return param.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale"))


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
    objective: torch.nn.Module | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``model`` and, in a third group without weight decay, the objective's own parameters
    (SigLIP's bias, a clustering head: the originals exempt both from weight decay)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [
        {"params": plain, "weight_decay": 0.0, "name": "no_decay"},
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
    ]
    own = [p for p in objective.parameters() if p.requires_grad] if objective is not None else []
    if own:
        groups.append({"params": own, "weight_decay": 0.0, "name": "objective"})
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
