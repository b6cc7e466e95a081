"""Fine-tuning defenses: each one is a configuration of the one training loop, not a second trainer.

A defense turns its own options into the objective section of a cleaning run; ``apply_defense`` resolves
it when the config is loaded, so the run's ``config.yaml`` records both the defense and the objective it
implies.
"""

from __future__ import annotations

from typing import Any, Protocol

from clipbackdoor.registry import Registry

DEFENSES = Registry("defense")


class Defense(Protocol):
    def objective(self) -> dict[str, Any]:
        """The objective section this defense trains with."""


def apply_defense(data: dict[str, Any]) -> dict[str, Any]:
    """Fill ``objective`` from ``defense`` in a config dict (no-op without a defense)."""
    section = data.get("defense")
    if not section:
        return data
    defense = DEFENSES.build(section, where="defense")
    return {**data, "objective": defense.objective()}
