"""Learning-rate schedules: functions from the step number (0-based) to a learning rate."""

from __future__ import annotations

import math
from typing import Callable

from onnxprune.errors import BadInputError

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    return lambda step: lr


def cosine(lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> Schedule:
    """Linear warm-up, then a half cosine from `lr` down to `min_lr` at `total_steps`."""
    def at(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    return at


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """`lr` multiplied by `gamma` every `step_size` steps."""
    return lambda step: lr * gamma ** (step // max(1, step_size))


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    if name == "cosine":
        return cosine(lr, total_steps, warmup_steps)
    if name == "constant":
        return constant(lr)
    if name == "step":  # three equal phases, each ten times smaller
        return step_decay(lr, max(1, total_steps // 3))
    raise BadInputError(f"unknown schedule '{name}'; choose cosine, step or constant")
