"""Metric functions on hand-computed logits (system.md section 3.1-3.2)."""

from __future__ import annotations

import pytest
import torch

from clipbackdoor.eval.metrics import asr_mask, attack_hits, find_target, topk_hits

# 4 images x 5 classes, every row with distinct scores so top-k is unambiguous.
LOGITS = torch.tensor(
    [
        [0.9, 0.1, 0.3, 0.2, 0.0],  # ranking 0, 2, 3, 1, 4
        [0.1, 0.2, 0.8, 0.7, 0.3],  # ranking 2, 3, 4, 1, 0
        [0.5, 0.6, 0.1, 0.2, 0.9],  # ranking 4, 1, 0, 3, 2
        [0.0, 0.4, 0.3, 0.1, 0.2],  # ranking 1, 2, 4, 3, 0
    ]
)


def test_topk_hits_hand_computed():
    labels = torch.tensor([0, 3, 0, 0])
    assert topk_hits(LOGITS, labels, 1).tolist() == [True, False, False, False]
    assert topk_hits(LOGITS, labels, 2).tolist() == [True, True, False, False]
    assert topk_hits(LOGITS, labels, 3).tolist() == [True, True, True, False]
    assert topk_hits(LOGITS, labels, 5).tolist() == [True, True, True, True]


def test_topk_hits_k_larger_than_classes_counts_everything():
    # top-5 on a 3-class problem (e.g. a small eval set) is "always right", not an error
    logits = torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.2, 0.1]])
    assert topk_hits(logits, torch.tensor([0, 2]), 5).tolist() == [True, True]


def test_topk_hits_returns_bool():
    assert topk_hits(LOGITS, torch.tensor([0, 0, 0, 0]), 1).dtype == torch.bool


def test_attack_hits_hand_computed():
    # target class 1: ranks 4th, 4th, 2nd, 1st in the four rows
    assert attack_hits(LOGITS, 1, 1).tolist() == [False, False, False, True]
    assert attack_hits(LOGITS, 1, 2).tolist() == [False, False, True, True]
    assert attack_hits(LOGITS, 1, 4).tolist() == [True, True, True, True]


def test_attack_hits_ignores_true_labels():
    # ASR asks "is the target predicted", whatever the image's true class (CleanCLIP's bug compared to the
    # true labels instead; system.md section 3.2).
    assert attack_hits(LOGITS, 4, 1).tolist() == [False, False, True, False]


def test_asr_mask_excludes_target_class_images():
    labels = torch.tensor([3, 954, 0, 954, 1])
    assert asr_mask(labels, 954).tolist() == [True, False, True, False, True]


def test_find_target_exact_match_beats_earlier_substring():
    # "banana" must pick the class named exactly banana, not an earlier class that merely contains it
    assert find_target(["banana bread", "apple", "banana"], "banana") == 2


def test_find_target_substring_fallback_takes_first():
    # the original takes the first class whose name contains the target (ImageNet's "banana" = 954)
    assert find_target(["apple", "green banana", "banana split"], "banana") == 1


def test_find_target_case_insensitive():
    assert find_target(["Apple", "Banana"], "bANana") == 1
    assert find_target(["Apple", "Ripe BANANA"], "banana") == 1


def test_find_target_error_names_target_and_classes():
    with pytest.raises(ValueError) as err:
        find_target(["apple", "cherry"], "kiwi")
    msg = str(err.value)
    assert "'kiwi'" in msg and "apple" in msg and "cherry" in msg


def test_find_target_error_truncates_long_class_lists():
    names = [f"class{i}" for i in range(30)]
    with pytest.raises(ValueError) as err:
        find_target(names, "kiwi")
    msg = str(err.value)
    assert "class9" in msg and "class10" not in msg and "..." in msg
