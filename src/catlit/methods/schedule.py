"""Schedules for the Re-Attention weight gamma over training."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "cosine", "exponential")


@dataclass
class GammaSchedule:
    gamma: float = 1.0
    schedule: str = (
        "constant"  # linear / cosine: gamma -> final over training; exponential: gamma * rate^epoch
    )
    final: float = 0.0
    rate: float = 0.9

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"method.gamma_schedule.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )

    def __call__(self, progress: float, epoch: int = 0) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.schedule == "linear":
            return self.gamma + (self.final - self.gamma) * p
        if self.schedule == "cosine":
            return self.final + (self.gamma - self.final) * 0.5 * (1 + math.cos(math.pi * p))
        if self.schedule == "exponential":
            return self.gamma * self.rate**epoch
        return self.gamma
