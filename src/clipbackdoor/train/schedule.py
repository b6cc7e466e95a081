"""Per-step learning rate: linear warm-up, then cosine decay to zero (or constant).

    lr(t) = base * (t + 1) / W                                  for t < W
    lr(t) = base * 0.5 * (1 + cos(pi * (t - W) / (T - W)))      for W <= t < T

with t the 0-based optimizer step and T the total number of steps. The original code indexed steps as
epoch * steps_per_epoch + batch with 1-based epochs, i.e. t + steps_per_epoch: cleaning runs skipped their
warm-up and the last epoch ran past T. ``step_offset`` reproduces that when asked.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    step_offset: int = 0,
) -> float:
    t = step + step_offset
    if t < warmup_steps:
        return base_lr * (t + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return base_lr
    return 0.5 * (1.0 + math.cos(math.pi * (t - warmup_steps) / decay_steps)) * base_lr
