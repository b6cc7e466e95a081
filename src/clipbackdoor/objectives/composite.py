"""A weighted sum of named objective terms: L = sum_k w_k L_k.

The config section names each registered term by ``<term>_weight`` (CleanCLIP's ``clip_weight`` and
``inmodal_weight``) and may pass options to a term as ``<term>: {...}``. A term with weight 0 is not
computed at all, so "SSL only" is ``clip_weight: 0`` and MMCL never makes the augmented views.
"""

from __future__ import annotations

from typing import Any

import torch

from clipbackdoor.objectives.base import OBJECTIVES, ModelOutputs
from clipbackdoor.registry import ConfigError, check_kwargs


class WeightedObjective(torch.nn.Module):
    def __init__(self, terms: dict[str, tuple[torch.nn.Module, float]]) -> None:
        super().__init__()
        self.weights = {name: w for name, (_, w) in terms.items()}
        self.terms = torch.nn.ModuleDict({name: m for name, (m, _) in terms.items()})
        self.needs_views = any(m.needs_views for m in self.terms.values())

    def forward(self, out: ModelOutputs) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        total = None
        for name, term in self.terms.items():
            parts = term(out)
            result.update(parts)
            weighted = self.weights[name] * parts[f"{name}_loss"]
            total = weighted if total is None else total + weighted
        result["loss"] = total
        return result


def build_objective(section: dict[str, Any], rank: int = 0, world_size: int = 1) -> WeightedObjective:
    """``{"clip_weight": 1, "inmodal_weight": 1, "inmodal": {...options}}`` -> WeightedObjective."""
    weights: dict[str, float] = {}
    options: dict[str, dict[str, Any]] = {}
    valid = [f"{n}_weight" for n in OBJECTIVES.names()] + OBJECTIVES.names()
    for key, value in section.items():
        if key.endswith("_weight") and key[: -len("_weight")] in OBJECTIVES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"objective.{key}: must be a number >= 0, got {value!r}")
            weights[key[: -len("_weight")]] = float(value)
        elif key in OBJECTIVES:
            if not isinstance(value, dict):
                raise ConfigError(f"objective.{key}: options must be a mapping, got {value!r}")
            options[key] = value
        else:
            raise ConfigError(f"objective: unknown key {key!r}; valid keys: {', '.join(valid)}")
    active = {n: w for n, w in weights.items() if w > 0}
    if not active:
        raise ConfigError("objective: at least one term needs a weight > 0 (e.g. clip_weight: 1)")
    terms = {}
    for name, w in active.items():
        cls = OBJECTIVES.get(name)
        kwargs = dict(options.get(name, {}))
        check_kwargs(cls, kwargs, f"objective.{name}")
        kwargs.setdefault("rank", rank)
        kwargs.setdefault("world_size", world_size)
        terms[name] = (cls(**kwargs), w)
    return WeightedObjective(terms)
