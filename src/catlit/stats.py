"""Statistics over seeds: mean, spread and a 95% interval (Student's t)."""

from __future__ import annotations

import statistics

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t95(dof: float) -> float:
    """Two-sided 95% quantile of Student's t (tabulated to 9 degrees of freedom, then approaching 1.96)."""
    return T95.get(int(dof), 1.96 + 2.4 / max(dof, 1.0)) if dof >= 1 else T95[1]


def interval(values: list[float]) -> tuple[float, float, float]:
    """mean, std, 95% half-width (0 with one value: no interval)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0, 0.0
    std = statistics.stdev(values)
    return mean, std, t95(len(values) - 1) * std / len(values) ** 0.5


def welch_half_width(a: list[float], b: list[float]) -> float | None:
    """95% half-width of mean(a) - mean(b) for independent samples (None with fewer than 2 on a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    dof = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1) or 1.0)
    return t95(max(dof, 1.0)) * (var_a + var_b) ** 0.5
