"""Every tracing method on a planted case (`catlit.tracing.circuits`): ROC AUC against the planted
circuit, the effect of its set at the planted size, wall time and peak memory. Used by
`benchmarks/tracing_suite.py` and the tests.

Pairs are split into search pairs (every method chooses on them) and held-out pairs (every set is
scored on them). The effect at the planted size is the held-out effect of the method's first k
components (k = the circuit's size) over the planted circuit's own held-out effect: 1.0 means as
good as the truth. On the null case, where no circuit exists, the case's own held-out half (other
candidate tokens) scores a method's set against 40 random sets of the same size (`null_excess`:
its effect minus the best random set's; above 0 reports a circuit that is not there).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catlit.tracing.baselines import BASELINES, Context, Ranking
from catlit.tracing.circuits import Case
from catlit.tracing.measures import auroc
from catlit.tracing.memory import peak_memory
from catlit.tracing.planted import orient
from catlit.tracing.search import pgbct
from catlit.tracing.settings import BaselineSettings, SearchSettings

SEARCH = SearchSettings.preset().to_dict()  # search=default (the suite batches as its tracers do)


@dataclass
class Row:
    case: str
    family: str
    method: str
    auroc: float
    effect_at_k: float  # held-out effect of the first k over the planted circuit's (null: raw)
    null_excess: float  # null case: effect minus the random sets' 95th percentile (else nan)
    wall_s: float
    peak_mb: float
    passes: str
    chosen: list[int] | None
    exact: bool = False  # the method's own set is the planted circuit


def split(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(n * heldout_fraction))
    return sorted(order[n_held:]), sorted(order[:n_held])


def pgbct_ranking(tracer, train_idx, search: SearchSettings, seed: int) -> Ranking:
    result = pgbct(tracer, train_idx, search, seed=seed)
    epochs = search.passes
    chosen = result.threshold(0.5)
    return Ranking("pgbct", [result.ranking()], result.wall_s, 2 * epochs + 2, epochs + 1, chosen=chosen)


def run_case(
    case: Case,
    methods: list[str],
    search: dict | None = None,
    variants: dict[str, dict] | None = None,
    seed: int = 0,
    heldout_fraction: float = 0.25,
    batch_size: int = 16,
    options: dict | None = None,
) -> list[Row]:
    """Every method in `methods` (registry names, or "pgbct"; `variants` adds PGB-CT runs under
    their own names with their own search settings) on `case`."""
    tracer = case.tracer(batch_size=batch_size)
    search = SearchSettings.from_config({**SEARCH, "batch_size": batch_size, **(search or {})})
    if case.truth:
        orient(tracer)
    if case.heldout is not None:
        held_idx = list(case.heldout)
        train_idx = [i for i in range(len(case.pairs)) if i not in set(held_idx)]
    else:
        train_idx, held_idx = split(len(case.pairs), heldout_fraction, seed)
    train_prep, held_prep = tracer.prepare(train_idx), tracer.prepare(held_idx)
    space = tracer.space

    def held(indices) -> float:
        return tracer.evaluate(space.from_indices(indices, tracer.device), held_prep)

    def score(indices):
        mask = space.from_indices(indices, tracer.device)
        return tracer.evaluate(mask, train_prep), tracer.evaluate(mask, held_prep)

    k = len(case.truth) or 2
    reference = held(case.truth) if case.truth else float("nan")
    random_held = [held(random.Random(seed + d).sample(range(space.numel), k)) for d in range(40)]
    threshold = max(random_held)
    options = BaselineSettings.preset(random_draws=5, **(options or {}))
    ctx = Context(tracer, train_prep, score, seed, options, train_idx, search, k)
    runs = {name: None for name in methods}
    runs.update({name: search.replace(**v) for name, v in (variants or {}).items()})
    rows = []
    for name, settings in runs.items():
        with peak_memory(tracer.device) as mem:
            if name == "pgbct" or settings is not None:
                ranking = pgbct_ranking(tracer, train_idx, settings or search, seed)
            else:
                ranking = BASELINES[name](ctx)
        scores = [held(order[:k]) for order in ranking.orders]
        effect = sum(scores) / len(scores)
        rows.append(
            Row(
                case=case.name,
                family=case.family,
                method=name,
                auroc=sum(auroc(o, case.truth) for o in ranking.orders) / len(ranking.orders),
                effect_at_k=effect / reference if case.truth else effect,
                null_excess=float("nan") if case.truth else effect - threshold,
                wall_s=ranking.wall_s,
                peak_mb=mem["mb"],
                passes=ranking.passes,
                chosen=ranking.chosen,
                exact=bool(case.truth) and sorted(ranking.chosen or []) == sorted(case.truth),
            )
        )
    return rows
