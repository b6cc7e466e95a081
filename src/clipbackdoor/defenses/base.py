"""The defense interface: a fine-tuning defense is a configuration and hooks of the one training loop.

A defense is one file and one registry line. It may

* set any config section it owns (``config()``): the objective (its terms and weights, including terms of
  its own, registered in ``objectives``), optimizer settings such as ``train.weight_decay``, the schedule,
  ``init.inherit_optimizer``. ``apply_defense`` merges that patch into the config when it is loaded, so the
  run's ``config.yaml`` records what the defense resolved to, and a user setting the same key is an error
  (``owned_settings``) rather than a value silently overwritten;
* act once at the start of a run (``start``), after the starting weights are loaded and never on resume,
  for example to transform those weights. The hook runs on every rank with the same seed and inputs, so
  every rank ends in the same state.

Defense modules do not import torch at module level: reading a run's config (reports, sweeps) builds its
defense, and that must not need torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipbackdoor.registry import ConfigError, Registry

if TYPE_CHECKING:
    import torch

DEFENSES = Registry("defense")


@dataclass
class StartContext:
    """What a defense's start hook receives.

    ``fresh_model()`` builds a freshly initialised model of the run's architecture (no pretrained weights),
    on the run's device, from a generator seeded by the run's seed: the same model on every rank and in
    every repetition of the run.
    """

    model: torch.nn.Module
    seed: int
    device: torch.device
    fresh_model: Callable[[], torch.nn.Module]


class Defense:
    """Base class of defenses: override ``config`` and, where needed, ``start``."""

    def config(self) -> dict[str, Any]:
        """The config sections this defense sets, as a nested patch: ``{"objective": {...}}`` replaces the
        objective section whole; any other section is merged key by key (``{"train": {"weight_decay": 5}}``)."""
        return {}

    def start(self, run: StartContext) -> None:
        """Once, when a run starts from its initial weights (never on resume)."""

    @classmethod
    def has_start_hook(cls) -> bool:
        return cls.start is not Defense.start


#: Sections a defense may set; the others (data, model, attack, ...) are the experiment, not the defense.
PATCHABLE = ("objective", "train", "init")


def owned_settings(section: dict[str, Any]) -> dict[str, Any]:
    """What the defense of ``section`` sets, by dotted key: ``{"objective": {...}, "train.weight_decay": 5.0}``."""
    patch = DEFENSES.build(section, where="defense").config()
    settings: dict[str, Any] = {}
    for name, value in patch.items():
        if name == "objective":
            settings[name] = value
        else:
            settings.update({f"{name}.{key}": v for key, v in value.items()})
    return settings


def apply_defense(data: dict[str, Any]) -> dict[str, Any]:
    """Merge the patch of ``data["defense"]`` into a config dict (no-op without a defense)."""
    section = data.get("defense")
    if not section:
        return data
    patch = DEFENSES.build(section, where="defense").config()
    out = dict(data)
    for name, value in patch.items():
        if name not in PATCHABLE:
            raise ConfigError(f"defense {section.get('name')!r} sets config section {name!r}; a defense may set "
                              f"only {', '.join(PATCHABLE)}")
        if name == "objective":
            out[name] = copy.deepcopy(value)
        else:
            out[name] = {**(out.get(name) or {}), **copy.deepcopy(value)}
    return out
