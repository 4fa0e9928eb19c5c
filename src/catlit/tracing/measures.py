"""Faithfulness curves of a ranking, their areas, and ROC AUC against a known circuit.

For a ranking and a set size k, with S_k its first k components and E(M) the mean effect of
patching the components in M (every other component keeps the base run's activation):

  sufficiency(k) = E(S_k) / E(all)          the effect the set carries on its own
  necessity(k)   = E(all \\ S_k) / E(all)    the effect left when every other component is patched

Sizes are log-spaced from 1 to N (`log_sizes`); x(k) = ln k / ln N puts them on [0, 1], and each
area is the trapezoid integral over x (so small sets weigh as much as large ones):

  suff_area = ∫ sufficiency dx        (higher is better; like MIB's CPR)
  cmd       = ∫ |1 − sufficiency| dx  (lower is better; like MIB's CMD)
  nec_area  = ∫ necessity dx          (lower is better: removing the set from the patch kills it)

ROC AUC of a ranking against a known circuit is the probability that a circuit component ranks
above a component outside it, read from the ranking's order (ties already broken by the method).
"""

from __future__ import annotations

import math


def log_sizes(n: int, points: int) -> list[int]:
    """`points` log-spaced set sizes from 1 to n (duplicates after rounding removed)."""
    if n < 1:
        return []
    if points < 2 or n == 1:
        return [n]
    return sorted({max(1, min(n, round(n ** (i / (points - 1))))) for i in range(points)})


def area(sizes: list[int], values: list[float], n: int) -> float:
    """Trapezoid integral of `values` over x = ln k / ln n (nan when n < 2 or one point)."""
    if n < 2 or len(sizes) < 2:
        return float("nan")
    xs = [math.log(k) / math.log(n) for k in sizes]
    return sum((xs[i + 1] - xs[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(xs) - 1))


def curves(tracer, prepared, orders: list[list[int]], sizes: list[int], full: float) -> dict:
    """Sufficiency and necessity at every size, averaged over `orders`, normalised by `full`."""
    space, n = tracer.space, tracer.space.numel
    scale = full if abs(full) > 1e-12 else float("nan")
    suff, nec = [], []
    for k in sizes:
        s_vals, n_vals = [], []
        for order in orders:
            top = order[:k]
            rest = sorted(set(range(n)) - set(top))
            s_vals.append(tracer.evaluate(space.from_indices(top, tracer.device), prepared))
            n_vals.append(tracer.evaluate(space.from_indices(rest, tracer.device), prepared))
        suff.append(sum(s_vals) / len(s_vals) / scale)
        nec.append(sum(n_vals) / len(n_vals) / scale)
    return {
        "sizes": list(sizes),
        "sufficiency": suff,
        "necessity": nec,
        "suff_area": area(sizes, suff, n),
        "cmd": area(sizes, [abs(1 - v) for v in suff], n),
        "nec_area": area(sizes, nec, n),
    }


def auroc(order: list[int], truth) -> float:
    """ROC AUC of a full order (best first) against the set `truth` (nan if truth is empty or all)."""
    truth = set(truth)
    positives, negatives = len(truth), len(order) - len(truth)
    if not positives or negatives <= 0:
        return float("nan")
    above, seen_negative = 0, 0
    for i in order:  # count, for every positive, the negatives ranked below it
        if i in truth:
            above += negatives - seen_negative
        else:
            seen_negative += 1
    return above / (positives * negatives)
