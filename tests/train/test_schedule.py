"""Per-step learning rate (system.md section 1.7): linear warm-up then cosine, as in CleanCLIP's scheduler."""

from __future__ import annotations

import math

import pytest

from clipbackdoor.train.schedule import lr_at

BASE = 5e-4


def lr(step, **kw):
    args = {"base_lr": BASE, "warmup_steps": 10, "total_steps": 110, "schedule": "cosine"}
    args.update(kw)
    return lr_at(step, **args)


def test_warmup_is_linear_from_base_over_w():
    # (t+1)/W, so step 0 already trains (lr = base/W, not 0) and step W-1 reaches base
    for t in range(10):
        assert lr(t) == pytest.approx(BASE * (t + 1) / 10, rel=1e-12)
    assert lr(9) == pytest.approx(BASE)


def test_cosine_starts_at_base_after_warmup():
    assert lr(10) == pytest.approx(BASE, rel=1e-12)


def test_cosine_midpoint_is_half():
    # midpoint of the decay phase: t - W = (T - W) / 2
    assert lr(60) == pytest.approx(BASE / 2, rel=1e-12)


def test_cosine_quarter_points():
    assert lr(35) == pytest.approx(BASE * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert lr(85) == pytest.approx(BASE * 0.5 * (1 + math.cos(3 * math.pi / 4)), rel=1e-12)


def test_last_step_is_near_zero_and_decay_is_monotone():
    values = [lr(t) for t in range(10, 110)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert 0 < values[-1] < BASE * 1e-3
    assert lr(110) == pytest.approx(0.0, abs=1e-20)  # T itself is the end of the cosine


def test_constant_schedule_keeps_warmup_then_holds():
    for t in range(10):
        assert lr(t, schedule="constant") == pytest.approx(BASE * (t + 1) / 10)
    for t in (10, 60, 109, 500):
        assert lr(t, schedule="constant") == BASE


def test_no_warmup():
    assert lr(0, warmup_steps=0) == pytest.approx(BASE)
    assert lr(50, warmup_steps=0, total_steps=100) == pytest.approx(BASE / 2)


def test_step_offset_reproduces_skipped_warmup():
    # The original indexed steps as epoch * steps_per_epoch + batch with 1-based epochs. With a cleaning
    # warm-up of 50 steps and >= 50 batches per epoch, the very first optimizer step already ran at ~base lr.
    steps_per_epoch, epochs, warmup = 80, 10, 50
    total = steps_per_epoch * epochs
    first = lr_at(0, base_lr=BASE, warmup_steps=warmup, total_steps=total, step_offset=steps_per_epoch)
    assert first == pytest.approx(BASE, rel=0.01)
    assert first > BASE * 0.98
    # without the offset the first step is base / W
    assert lr_at(0, base_lr=BASE, warmup_steps=warmup, total_steps=total) == pytest.approx(BASE / warmup)
    # and the offset schedule is the plain one shifted by steps_per_epoch
    for t in (0, 7, 100, 400):
        shifted = lr_at(t, base_lr=BASE, warmup_steps=warmup, total_steps=total, step_offset=steps_per_epoch)
        plain = lr_at(t + steps_per_epoch, base_lr=BASE, warmup_steps=warmup, total_steps=total)
        assert shifted == plain


def test_step_offset_smaller_than_warmup_only_skips_part_of_it():
    first = lr_at(0, base_lr=BASE, warmup_steps=100, total_steps=1000, step_offset=30)
    assert first == pytest.approx(BASE * 31 / 100)


@pytest.mark.parametrize("total", [0, 5, 10])
def test_total_not_longer_than_warmup(total):
    # A run shorter than its warm-up: no division by zero, and after the warm-up the lr stays at base.
    for t in range(12):
        value = lr(t, warmup_steps=10, total_steps=total)
        assert math.isfinite(value)
        expected = BASE * (t + 1) / 10 if t < 10 else BASE
        assert value == pytest.approx(expected)
