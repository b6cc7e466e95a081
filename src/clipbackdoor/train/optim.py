"""AdamW with CLIP's two parameter groups."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm weights, biases, embeddings' scale-like 1-d tensors and the logit scale get no weight decay
    (CLIP, CleanCLIP: names containing bn/ln/bias/logit_scale; any 1-d tensor is a gain or a bias)."""
    return param.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale"))


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
    objective: torch.nn.Module | None = None, fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over ``model`` and, in a third group without weight decay, the objective's own parameters
    (SigLIP's bias, a clustering head: the originals exempt both from weight decay).

    ``fused=True`` runs torch's fused AdamW kernel (CUDA and CPU): one kernel per parameter group for the
    whole update, instead of torch's default of a few multi-tensor kernels per group on CUDA (``foreach``)
    and a loop over the parameters on the CPU. It computes the same update up to float rounding. ``False``
    leaves the choice to torch, as before.
    """
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
    # None, not False: an explicit False would also turn off torch's default multi-tensor path on CUDA.
    kernel = True if fused else None
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=kernel)
    optimizer.register_load_state_dict_post_hook(functools.partial(_keep_kernel, fused=kernel))
    return optimizer


def _keep_kernel(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """After ``load_state_dict``: this run's ``fused`` setting, not the saved state's.

    A loaded state (a resumed run's ``last.pt``, or the pre-training state that ``init.inherit_optimizer``
    takes over) replaces the parameter groups, and with them the ``fused`` flag it was saved with, so a
    cleaning run with another setting would silently run the other kernel. Fused AdamW keeps each
    parameter's step count as a float32 tensor on the parameter's device, the other paths on the CPU, so
    the counts move with the flag.
    """
    saved = {bool(group.get("fused")) for group in optimizer.param_groups}
    if saved != {bool(fused)}:
        log.info("the loaded optimizer state was saved with fused AdamW %s; this run uses fused=%s",
                 "on" if True in saved else "off", bool(fused))
    for group in optimizer.param_groups:
        group["fused"] = fused
        if fused:
            group["foreach"] = None  # fused and foreach are exclusive
        for p in group["params"]:
            state = optimizer.state.get(p)
            step = state.get("step") if state else None
            if torch.is_tensor(step):
                if fused:
                    state["step"] = step.to(device=p.device, dtype=torch.float32)
                else:
                    state["step"] = step.to(device="cpu")
