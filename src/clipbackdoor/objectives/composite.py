"""A weighted sum of named objective terms: L = sum_k w_k L_k.

The config section names each registered term by ``<term>_weight`` (CleanCLIP's ``clip_weight`` and
``inmodal_weight``, ``siglip_weight``, ...) and may pass options to a term as ``<term>: {...}``. A term with
weight 0 is not computed at all, so "SSL only" is ``clip_weight: 0`` and MMCL never makes the augmented
views.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from clipbackdoor.errors import did_you_mean
from clipbackdoor.objectives.base import OBJECTIVES, EpochContext, Term
from clipbackdoor.registry import ConfigError, check_kwargs


class WeightedObjective(torch.nn.Module):
    def __init__(self, terms: dict[str, tuple[Term, float]]) -> None:
        super().__init__()
        self.weights = {name: w for name, (_, w) in terms.items()}
        self.terms = torch.nn.ModuleDict({name: m for name, (m, _) in terms.items()})
        self.needs: frozenset[str] = frozenset().union(*(m.needs for m in self.terms.values()))

    def start_epoch(self, epoch: EpochContext) -> None:
        for term in self.terms.values():
            term.start_epoch(epoch)

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        total = None
        for name, term in self.terms.items():
            parts = term(out, batch)
            result.update(parts)
            weighted = self.weights[name] * parts[f"{name}_loss"]
            total = weighted if total is None else total + weighted
        result["loss"] = total
        return result


def build_objective(section: dict[str, Any], rank: int = 0, world_size: int = 1,
                    **context: Any) -> WeightedObjective:
    """``{"clip_weight": 1, "inmodal_weight": 1, "inmodal": {...options}}`` -> WeightedObjective.

    ``rank``, ``world_size`` and ``context`` (what the program knows, e.g. ``embed_dim``, the model's
    embedding size) reach each term whose constructor takes them and whose options do not set them.
    """
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
            raise ConfigError(f"objective: unknown key {key!r}{did_you_mean(str(key), valid)}; "
                              f"valid keys: {', '.join(valid)}")
    active = {n: w for n, w in weights.items() if w > 0}
    if not active:
        raise ConfigError("objective: at least one term needs a weight > 0 (e.g. clip_weight: 1)")
    supplied = {"rank": rank, "world_size": world_size, **context}
    terms = {}
    for name, w in active.items():
        cls = OBJECTIVES.get(name)
        kwargs = dict(options.get(name, {}))
        check_kwargs(cls, kwargs, f"objective.{name}")
        accepted = inspect.signature(cls).parameters
        for key, value in supplied.items():
            if key in accepted:
                kwargs.setdefault(key, value)
        try:
            terms[name] = (cls(**kwargs), w)
        except ValueError as err:  # an impossible option value, named by the term
            raise ConfigError(f"objective.{name}: {err}") from None
    return WeightedObjective(terms)
