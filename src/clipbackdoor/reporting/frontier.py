"""Model selection over (attack success rate, clean accuracy) points.

A cleaning run yields one point per hyper-parameter setting and epoch. The paper's question is whether *any*
setting removes the backdoor without destroying the model, so the reports look at the trade-off frontier and at
the best accuracy reachable under an ASR budget rather than at a single run. Lower ASR and higher accuracy are
better. NaN marks a metric that was not measured (a crashed or diverged run) and never wins anything.

Pure Python on purpose: report code must not need torch or matplotlib to pick a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Rates computed by float arithmetic land a hair off their decimal value (1 - 0.95 == 0.050000000000000044), so
# an exact comparison would reject a run that sits precisely on the ASR budget.
THRESHOLD_TOLERANCE = 1e-12


def _is_nan(value: float) -> bool:
    return math.isnan(float(value))


def _valid(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points whose ASR and accuracy are both known."""
    return [i for i, (asr, acc) in enumerate(points) if not (_is_nan(asr) or _is_nan(acc))]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(asr, acc)`` points, ordered by increasing ASR.

    A point is dominated when another has ``asr <=`` and ``acc >=`` with at least one inequality strict. Of
    exact duplicates only the first occurrence is kept, so each trade-off appears once on the front. Points with
    a NaN coordinate are ignored. The front therefore has strictly increasing ASR and strictly increasing
    accuracy.
    """
    # Sorting by ASR, then best accuracy first, then index makes a single sweep sufficient: a point is on the
    # front exactly when it beats the best accuracy seen at lower-or-equal ASR. Equal accuracy does not beat it,
    # which drops both later duplicates and points that only match an earlier one's accuracy at higher ASR.
    order = sorted(_valid(points), key=lambda i: (float(points[i][0]), -float(points[i][1]), i))
    front: list[int] = []
    best_acc = -math.inf
    for i in order:
        acc = float(points[i][1])
        if acc > best_acc:
            front.append(i)
            best_acc = acc
    return front


def best_at_threshold(points: Sequence[tuple[float, float]], threshold: float) -> int | None:
    """Index of the most accurate point whose ASR is at most ``threshold`` (inclusive), or None.

    Ties in accuracy go to the lower ASR, then to the lower index, so the choice is deterministic. Points with
    a NaN coordinate never qualify.
    """
    limit = float(threshold) + THRESHOLD_TOLERANCE
    candidates = [i for i in _valid(points) if float(points[i][0]) <= limit]
    if not candidates:
        return None
    return min(candidates, key=lambda i: (-float(points[i][1]), float(points[i][0]), i))


def argmin(values: Sequence[float]) -> int | None:
    """Index of the smallest non-NaN value (the first one on ties), or None if there is none.

    Used to select the checkpoint with the lowest validation loss, where a NaN loss marks a diverged epoch.
    """
    best: int | None = None
    for i, value in enumerate(values):
        if _is_nan(value):
            continue
        if best is None or float(value) < float(values[best]):
            best = i
    return best
