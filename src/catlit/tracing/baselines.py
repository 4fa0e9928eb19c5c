"""Baselines for choosing a set of components, scored by the same evaluator as PGB-CT.

  topk    the k components with the largest single-component effect (each patched alone)
  greedy  forward selection: repeatedly add the component that most increases the joint effect
  random  random subsets of the same size (mean effect over `draws` subsets)
  all     every component at once

Each is a function registered under its name (`@baseline("name")`) that takes the `Context` (the
tracer, the scorer, the component space, the settings) and the set sizes to compare, and returns one
`Scored` row per size. A new baseline is one such function in this file.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from catlit.tracing.engine import Tracer


@dataclass
class Scored:
    method: str
    size: int
    train: float  # mean effect on the training pairs
    heldout: float  # mean effect on the held-out pairs
    wall_s: float  # time the method took to choose the set


@dataclass
class Context:
    tracer: Tracer
    train_prep: list  # the training pairs, prepared for evaluation
    score: Callable[[list[int]], tuple[float, float]]  # flat indices -> (train, held-out) effect
    seed: int = 0
    options: dict = field(default_factory=dict)  # the `baselines` config section

    @property
    def numel(self) -> int:
        return self.tracer.space.numel

    def scored(self, method: str, k: int, indices: list[int], wall: float) -> Scored:
        return Scored(method, k, *self.score(indices), wall)


BASELINES: dict[str, Callable[[Context, list[int]], list[Scored]]] = {}


def baseline(name: str):
    def register(fn):
        BASELINES[name] = fn
        return fn

    return register


def single_effects(tracer: Tracer, prepared) -> tuple[list[float], float]:
    """Effect of patching each component alone (one evaluation per component)."""
    started = time.perf_counter()
    space = tracer.space
    effects = [tracer.evaluate(space.from_indices([i], tracer.device), prepared) for i in range(space.numel)]
    return effects, time.perf_counter() - started


def topk_of(effects: list[float], k: int) -> list[int]:
    return sorted(range(len(effects)), key=lambda i: -effects[i])[:k]


def greedy_order(tracer: Tracer, prepared, max_size: int) -> tuple[list[int], list[float], list[float]]:
    """Forward selection up to `max_size`: (order added, joint effect after each, seconds elapsed)."""
    space, chosen = tracer.space, []
    effects, times = [], []
    remaining = set(range(space.numel))
    started = time.perf_counter()
    for _ in range(min(max_size, space.numel)):
        best, best_effect = None, float("-inf")
        for i in sorted(remaining):
            value = tracer.evaluate(space.from_indices([*chosen, i], tracer.device), prepared)
            if value > best_effect:
                best, best_effect = i, value
        chosen.append(best)
        remaining.discard(best)
        effects.append(best_effect)
        times.append(time.perf_counter() - started)
    return chosen, effects, times


def random_subsets(n: int, k: int, draws: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(n), min(k, n)) for _ in range(draws)]


@baseline("topk")
def topk(ctx: Context, sizes: list[int]) -> list[Scored]:
    effects, wall = single_effects(ctx.tracer, ctx.train_prep)
    return [ctx.scored("topk", k, topk_of(effects, k), wall) for k in sizes]


@baseline("greedy")
def greedy(ctx: Context, sizes: list[int]) -> list[Scored]:
    if not sizes:
        return []
    order, _, times = greedy_order(ctx.tracer, ctx.train_prep, max(sizes))
    return [ctx.scored("greedy", k, order[:k], times[k - 1]) for k in sizes]


@baseline("random")
def random_sets(ctx: Context, sizes: list[int]) -> list[Scored]:
    rows = []
    for k in sizes:
        scores = [
            ctx.score(d) for d in random_subsets(ctx.numel, k, ctx.options.get("random_draws", 5), ctx.seed)
        ]
        train = sum(s[0] for s in scores) / len(scores)
        rows.append(Scored("random", k, train, sum(s[1] for s in scores) / len(scores), 0.0))
    return rows


@baseline("all")
def everything(ctx: Context, sizes: list[int]) -> list[Scored]:
    return [ctx.scored("all", ctx.numel, list(range(ctx.numel)), 0.0)]
