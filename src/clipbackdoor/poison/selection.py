"""Seeded choice of which pairs to poison."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipbackdoor.registry import ConfigError


def budget_to_count(budget: float, num_samples: int) -> int:
    """A budget >= 1 is a count; below 1 it is a rate, rounded to the nearest count."""
    if budget < 0:
        raise ConfigError(f"poison.budget: must be >= 0, got {budget}")
    if budget >= 1:
        if not float(budget).is_integer():
            raise ConfigError(f"poison.budget: a count must be a whole number, got {budget}")
        count = int(budget)
    else:
        count = int(round(budget * num_samples))
    if count > num_samples:
        raise ConfigError(f"poison.budget: {count} poisons requested but the dataset has {num_samples} pairs")
    return count


def choose(candidates: Sequence[int] | np.ndarray, count: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """``count`` distinct candidates, sorted, uniformly at random."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if count > len(candidates):
        raise ConfigError(f"poison.budget: {count} poisons requested but only {len(candidates)} {what}")
    return np.sort(rng.choice(candidates, size=count, replace=False))
