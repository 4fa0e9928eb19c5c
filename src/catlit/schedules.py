"""Schedules of a loss weight over training, one table for every weight catlit schedules.

A schedule maps the weight's configured `value` to its value at a point of training, given the
fraction of optimizer steps done (`progress`, 0..1) and the epoch (0-based):

  constant      value
  linear        value -> final over training (linear in progress)
  cosine        value -> final over training (half a cosine)
  exponential   value * rate^epoch             (CAT's released decay: rate = e^-1)
  grow_linear   value * (epoch + 1)            (PGB-CT's `linear` penalty schedule)
  grow_exp      value * 2^epoch                (PGB-CT's `exp`)
  grow_poly     value * epoch^2                (PGB-CT's `poly`)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = {
    "constant": lambda s, p, e: s.value,
    "linear": lambda s, p, e: s.value + (s.final - s.value) * p,
    "cosine": lambda s, p, e: s.final + (s.value - s.final) * 0.5 * (1 + math.cos(math.pi * p)),
    "exponential": lambda s, p, e: s.value * s.rate**e,
    "grow_linear": lambda s, p, e: s.value * (e + 1),
    "grow_exp": lambda s, p, e: s.value * 2.0**e,
    "grow_poly": lambda s, p, e: s.value * float(e) ** 2,
}


@dataclass
class Schedule:
    value: float = 1.0
    schedule: str = "constant"
    final: float = 0.0  # linear / cosine: the value at the end of training
    rate: float = 0.9  # exponential: the factor per epoch
    key: str = "schedule"  # how the config names this schedule, for errors

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{self.key}={self.schedule!r}; choose from {sorted(SCHEDULES)}")

    def __call__(self, progress: float = 0.0, epoch: int = 0) -> float:
        return float(SCHEDULES[self.schedule](self, min(max(progress, 0.0), 1.0), epoch))
