"""Model selection over (ASR, accuracy) points: Pareto front, best under an ASR budget, lowest loss."""

from __future__ import annotations

import math

from clipbackdoor.reporting.frontier import argmin, best_at_threshold, pareto_front

NAN = math.nan

# A realistic mix: the poisoned start (high ASR, best accuracy), cleaned runs that trade accuracy for ASR, and
# points that tie another on one coordinate.
MIXED = [(0.9, 0.5), (0.05, 0.40), (0.02, 0.30), (0.05, 0.45), (0.5, 0.45), (0.01, 0.45)]


def test_pareto_front_hand_computed():
    # Index 5 (0.01, 0.45) has the lowest ASR, so nothing dominates it. It dominates 2 (0.02, 0.30) and
    # 1 (0.05, 0.40) outright, and 3 (0.05, 0.45) and 4 (0.5, 0.45) by lower ASR at equal accuracy; a tie on
    # one coordinate must still count as domination. Index 0 (0.9, 0.5) is the only point with accuracy above
    # 0.45, so it survives despite its ASR. Ordered by ASR: [5, 0].
    assert pareto_front(MIXED) == [5, 0]


def test_pareto_front_is_ordered_by_asr_not_by_input():
    # Reports draw the front as a line, which needs increasing ASR whatever order the runs were collected in.
    points = [(0.8, 0.6), (0.1, 0.3), (0.4, 0.5)]
    assert pareto_front(points) == [1, 2, 0]


def test_pareto_front_keeps_first_of_exact_duplicates():
    # Two runs with identical metrics are one trade-off; the front lists it once, by its first index.
    points = [(0.3, 0.4), (0.1, 0.2), (0.3, 0.4), (0.1, 0.2)]
    assert pareto_front(points) == [1, 0]


def test_pareto_front_all_identical():
    # The degenerate case of duplicates: everything collapses to index 0.
    assert pareto_front([(0.2, 0.5)] * 4) == [0]


def test_pareto_front_ignores_nan():
    # A NaN metric is an unmeasured run: it must neither appear on the front nor knock real points off it,
    # which it would if comparisons with NaN were taken at face value.
    points = [(NAN, 0.9), (0.3, 0.4), (0.1, NAN), (0.2, 0.3), (NAN, NAN)]
    assert pareto_front(points) == [3, 1]


def test_pareto_front_empty_and_single():
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 0.5)]) == [0]
    assert pareto_front([(NAN, 0.5)]) == []


def test_best_at_threshold_budgets():
    # The paper reports the best accuracy at ASR <= 1%, 5% and 10%; each budget admits more runs.
    points = [(0.9, 0.60), (0.005, 0.20), (0.05, 0.40), (0.08, 0.50), (0.2, 0.55)]
    assert best_at_threshold(points, 0.01) == 1
    # 0.05 sits exactly on the budget: the boundary is inclusive.
    assert best_at_threshold(points, 0.05) == 2
    assert best_at_threshold(points, 0.10) == 3


def test_best_at_threshold_tolerates_float_rounding_at_the_boundary():
    # 1 - 0.95 is 0.050000000000000044; an ASR computed that way is "5%" and must pass a 5% budget.
    asr = 1 - 0.95
    assert asr > 0.05
    assert best_at_threshold([(asr, 0.4)], 0.05) == 0
    # The tolerance is tiny: a genuinely higher ASR still fails.
    assert best_at_threshold([(0.0501, 0.4)], 0.05) is None


def test_best_at_threshold_ties():
    # Equal accuracy: the lower ASR is the better model; fully equal: the lower index, for determinism.
    assert best_at_threshold([(0.04, 0.5), (0.02, 0.5), (0.03, 0.5)], 0.05) == 1
    assert best_at_threshold([(0.5, 0.1), (0.02, 0.5), (0.02, 0.5)], 0.05) == 1


def test_best_at_threshold_none_qualifying_and_nan():
    assert best_at_threshold([(0.9, 0.5), (0.2, 0.4)], 0.1) is None
    assert best_at_threshold([], 0.1) is None
    # A NaN accuracy must not win (NaN compares false with everything) and a NaN ASR must not pass the budget.
    assert best_at_threshold([(0.01, NAN), (NAN, 0.9), (0.02, 0.3)], 0.05) == 2
    assert best_at_threshold([(NAN, NAN)], 1.0) is None


def test_argmin():
    # Lowest validation loss selects the checkpoint; a diverged epoch (NaN) is skipped, not chosen.
    assert argmin([0.5, NAN, 0.2, 0.3]) == 2
    assert argmin([NAN, 0.4]) == 1
    # Ties go to the earliest epoch.
    assert argmin([0.3, 0.1, 0.1]) == 1
    assert argmin([]) is None
    assert argmin([NAN, NAN]) is None
