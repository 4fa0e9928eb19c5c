"""Faithfulness curves of a ranking, their areas, and ROC AUC against a known circuit.

For a ranking and a set size k, with S_k its first k components and E(M) the mean effect of
patching the components in M (every other component computes live on the base input):

  sufficiency(k) = E(S_k) / E(all)          the effect the set carries on its own
  necessity(k)   = E(all \\ S_k) / E(all)    the effect left when every other component is patched

With the base run as MIB's corrupted input, the source as its clean one and effect=logit_diff,
sufficiency(k) has the form of MIB's faithfulness, (m(S_k) − m(∅)) / (m(all) − m(∅)); the intervention
behind m is catlit's, not MIB's: catlit sets S_k's components to their source-run values and computes
everything else live on the base input; MIB runs the clean input with every node outside the circuit
fixed at its corrupted-run value. The two differ wherever components read one another.

Two grids (`measures.grid`):

  mib  MIB's circuit-track grid: the fractions 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100%
       of the N components, k = int(fraction × N) (so the smallest fractions of a small model are
       the empty set), and the trapezoid over the fraction on a linear axis:
         cpr      = ∫ sufficiency d(fraction)         (higher is better; MIB's CPR)
         cmd      = ∫ |1 − sufficiency| d(fraction)   (lower is better; MIB's CMD)
         nec_area = ∫ necessity d(fraction)           (lower is better; catlit's, on MIB's grid)
  log  `points` log-spaced sizes from 1 to N, x(k) = ln k / ln N (small sets weigh as much as large
       ones); catlit's own areas, not MIB's:
         suff_area_log, dev_area_log (∫ |1 − sufficiency| dx), nec_area_log

ROC AUC of a ranking against a known circuit is the probability that a circuit component ranks
above a component outside it, read from the ranking's order (ties already broken by the method).
"""

from __future__ import annotations

import math

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
GRIDS = ("mib", "log")
INTERVENTIONS = ("catlit", "mib")


def log_sizes(n: int, points: int) -> list[int]:
    """`points` log-spaced set sizes from 1 to n (duplicates after rounding removed)."""
    if n < 1:
        return []
    if points < 2 or n == 1:
        return [n]
    return sorted({max(1, min(n, round(n ** (i / (points - 1))))) for i in range(points)})


def mib_sizes(n: int) -> list[int]:
    """The set size at each of MIB's fractions, counted as MIB counts: int(fraction × n)."""
    return [int(fraction * n) for fraction in MIB_FRACTIONS]


def trapezoid(xs: list[float], values: list[float]) -> float:
    """Trapezoid integral of `values` over `xs` (nan with fewer than two points)."""
    if len(xs) < 2:
        return float("nan")
    return sum((xs[i + 1] - xs[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(xs) - 1))


def area(sizes: list[int], values: list[float], n: int) -> float:
    """Trapezoid integral of `values` over x = ln k / ln n (nan when n < 2 or one point)."""
    if n < 2 or len(sizes) < 2:
        return float("nan")
    return trapezoid([math.log(k) / math.log(n) for k in sizes], values)


def grid_sizes(grid: str, n: int, points: int) -> list[int]:
    if grid not in GRIDS:
        raise ValueError(f"measures.grid={grid!r}; choose from {GRIDS}")
    return mib_sizes(n) if grid == "mib" else log_sizes(n, points)


def curves(
    tracer,
    prepared,
    orders: list[list[int]],
    sizes: list[int],
    full: float,
    grid: str = "log",
    intervention: str = "catlit",
) -> dict:
    """Sufficiency and necessity at every size, averaged over `orders`, normalised by `full`, and
    the grid's areas (`sizes` from `grid_sizes`).

    intervention=mib: `tracer` and `prepared` are the swapped ones (`Tracer.swapped`: the clean
    input runs, patches bring the corrupted input's values) and `full` their all-components effect
    E'(all). MIB's faithfulness of a circuit S fixes everything outside S at its corrupted value:
    with effect=logit_diff (linear in the metric m), (m(S) − m(∅)) / (m(all) − m(∅)) =
    1 − E'(outside S) / E'(all), so sufficiency(k) = 1 − the swapped run's necessity(k); necessity(k)
    is, in the same terms, the faithfulness of the circuit without S_k."""
    if intervention not in INTERVENTIONS:
        raise ValueError(f"measures.intervention={intervention!r}; choose from {INTERVENTIONS}")
    space, n = tracer.space, tracer.space.numel
    scale = full if abs(full) > 1e-12 else float("nan")
    measured: dict[int, tuple[float, float]] = {}  # MIB's smallest fractions share a size
    for k in dict.fromkeys(sizes):
        s_vals, n_vals = [], []
        for order in orders:
            top = order[:k]
            rest = sorted(set(range(n)) - set(top))
            s_vals.append(tracer.evaluate(space.from_indices(top, tracer.device), prepared))
            n_vals.append(tracer.evaluate(space.from_indices(rest, tracer.device), prepared))
        measured[k] = (sum(s_vals) / len(s_vals) / scale, sum(n_vals) / len(n_vals) / scale)
    suff = [measured[k][0] for k in sizes]
    nec = [measured[k][1] for k in sizes]
    if intervention == "mib":
        suff, nec = [1 - v for v in nec], [1 - v for v in suff]
    out = {"grid": grid, "sizes": list(sizes), "sufficiency": suff, "necessity": nec}
    if grid == "mib":
        xs = list(MIB_FRACTIONS)
        out.update(
            fractions=xs,
            cpr=trapezoid(xs, suff),
            cmd=trapezoid(xs, [abs(1 - v) for v in suff]),
            nec_area=trapezoid(xs, nec),
        )
    else:
        out.update(
            suff_area_log=area(sizes, suff, n),
            dev_area_log=area(sizes, [abs(1 - v) for v in suff], n),
            nec_area_log=area(sizes, nec, n),
        )
    return out


AREAS = {"mib": ("cpr", "cmd", "nec_area"), "log": ("suff_area_log", "dev_area_log", "nec_area_log")}


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
