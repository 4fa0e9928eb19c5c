"""Methods that rank components, scored by the same evaluator as PGB-CT.

Each method returns a `Ranking`: one or more full orders of the components (best first), the set it
chooses itself where it chooses one, and its cost in passes over the pairs (F forward, B backward;
N components, k the largest set size asked for). The caller scores every order at every size.

  topk             each component patched alone, ranked by its effect.               N F
  greedy           forward selection: add the component that most increases the     ≈ k·N F
                   joint effect (up to k; the rest by their joint effect in the
                   last round).
  greedy_backward  ACDC-style: from every component, walk from the last layer to     N F
                   the first and drop a component while the effect stays within
                   τ × |all-components effect| of the current set's; the kept set
                   first.
  atp              attribution patching: ∂effect/∂z at z = 0 (first order in the      2 F + 1 B
                   patch), every component from one forward and backward.
  atp_ig           integrated gradients along z = α·1, α = 1/steps ... 1 (EAP-IG-     (1 + steps) F
                   style: the activations move from base to source together).       + steps B
  hardconcrete     an L0 mask (HardConcrete gates, Louizos et al.; subnetwork        epochs × (2 F + 1 B),
                   probing) trained on the same pairs, epochs and batches as         as PGB-CT
                   PGB-CT: effect loss + λ1·E[L0]; ranked by log α, its set the
                   deterministic gates ≥ 0.5.
  random           random orders (the measures average over `random_draws`).         0
  all              every component at once (the normaliser of the curves).           1 F

A method is a function registered under its name (`@baseline("name")`) that takes the `Context`;
a new method is one such function in this file.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from catlit.tracing.effects import effect_loss, effect_of
from catlit.tracing.engine import Tracer
from catlit.tracing.search import loss_scale, penalty_weight
from catlit.tracing.settings import BaselineSettings, SearchSettings


@dataclass
class Ranking:
    method: str
    orders: list[list[int]]  # full orders of the flat component indices, best first (random: several)
    wall_s: float  # time the method took
    forwards: float  # passes over the pairs
    backwards: float = 0.0
    chosen: list[int] | None = None  # the set the method picks itself, where it picks one
    wall_at: dict[int, float] = field(default_factory=dict)  # time to reach a size (greedy)
    peak_mb: float = float("nan")  # peak memory rise while the method ran (set by the caller)

    @property
    def order(self) -> list[int]:
        return self.orders[0]

    @property
    def passes(self) -> str:
        back = f" + {self.backwards:g} B" if self.backwards else ""
        return f"{self.forwards:g} F{back}"


@dataclass
class Scored:
    method: str
    size: int
    train: float  # mean effect on the training pairs
    heldout: float  # mean effect on the held-out pairs
    wall_s: float  # time the method took to choose the set
    heldout_pairs: list[float] | None = None  # each held-out pair's effect (random: the mean over draws)


@dataclass
class Context:
    tracer: Tracer
    train_prep: list  # the training pairs, prepared for evaluation
    score: Callable[[list[int]], tuple[float, float]]  # flat indices -> (train, held-out) effect
    seed: int = 0
    options: BaselineSettings = field(default_factory=BaselineSettings.preset)  # trace.yaml's `baselines`
    train_idx: list[int] = field(default_factory=list)  # the search's pairs (hardconcrete trains on them)
    search: SearchSettings = field(default_factory=SearchSettings.preset)  # hardconcrete's budget: PGB-CT's
    max_size: int = 1  # greedy stops here: the largest of baselines.sizes (PGB-CT's set size without them)
    heldout_effects: dict = field(default_factory=dict)  # a scored set (sorted indices) -> per held-out pair

    @property
    def numel(self) -> int:
        return self.tracer.space.numel

    def scored(self, method: str, k: int, indices: list[int], wall: float) -> Scored:
        return Scored(method, k, *self.score(indices), wall)


BASELINES: dict[str, Callable[[Context], Ranking]] = {}
# baselines trained with the search's settings (its loss, λ1, schedule, epochs, rates), so their results
# change with `search.*` as PGB-CT's do
SEARCH_TRAINED = frozenset({"hardconcrete"})


def baseline(name: str):
    def register(fn):
        BASELINES[name] = fn
        return fn

    return register


def _by_value(values, descending: bool = True) -> list[int]:
    values = torch.as_tensor(values, dtype=torch.float64)
    return torch.argsort(-values if descending else values, stable=True).tolist()


def single_effects(tracer: Tracer, prepared) -> tuple[list[float], float]:
    """Effect of patching each component alone (one evaluation per component)."""
    started = time.perf_counter()
    space = tracer.space
    effects = [tracer.evaluate(space.from_indices([i], tracer.device), prepared) for i in range(space.numel)]
    return effects, time.perf_counter() - started


def topk_of(effects: list[float], k: int) -> list[int]:
    return _by_value(effects)[:k]


def greedy_order(tracer: Tracer, prepared, max_size: int) -> tuple[list[int], list[float], list[float]]:
    """Forward selection up to `max_size`: (the full order, joint effect after each addition, seconds
    elapsed after each). Beyond `max_size` the order continues by the last round's joint effects."""
    space, chosen = tracer.space, []
    effects, times = [], []
    remaining = list(range(space.numel))
    started = time.perf_counter()
    last: dict[int, float] = {}
    for _ in range(min(max_size, space.numel)):
        last = {
            i: tracer.evaluate(space.from_indices([*chosen, i], tracer.device), prepared) for i in remaining
        }
        best = max(remaining, key=lambda i: (last[i], -i))
        chosen.append(best)
        remaining.remove(best)
        effects.append(last[best])
        times.append(time.perf_counter() - started)
    rest = sorted(remaining, key=lambda i: -last.get(i, 0.0))
    return chosen + rest, effects, times


def random_subsets(n: int, k: int, draws: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(n), min(k, n)) for _ in range(draws)]


@baseline("topk")
def topk(ctx: Context) -> Ranking:
    effects, wall = single_effects(ctx.tracer, ctx.train_prep)
    return Ranking("topk", [_by_value(effects)], wall, forwards=ctx.numel + 1)


@baseline("greedy")
def greedy(ctx: Context) -> Ranking:
    size = min(ctx.max_size, ctx.numel)
    started = time.perf_counter()
    order, _, times = greedy_order(ctx.tracer, ctx.train_prep, size)
    forwards = sum(ctx.numel - i for i in range(size)) + 1
    at = {k + 1: t for k, t in enumerate(times)}
    return Ranking("greedy", [order], time.perf_counter() - started, forwards, wall_at=at)


@baseline("greedy_backward")
def greedy_backward(ctx: Context) -> Ranking:
    tracer, space = ctx.tracer, ctx.tracer.space
    tau = float(ctx.options.tau)
    started = time.perf_counter()
    kept = set(range(space.numel))
    current = tracer.evaluate(space.full(1.0, device=tracer.device), ctx.train_prep)
    scale = abs(current) or 1.0
    drops: dict[int, float] = {}
    # from the output towards the input, as ACDC walks its graph: later layers first
    for i in sorted(range(space.numel), key=lambda i: (-space.locate(i)[1], i)):
        trial = tracer.evaluate(space.from_indices(sorted(kept - {i}), tracer.device), ctx.train_prep)
        drops[i] = current - trial
        if drops[i] < tau * scale:
            kept.discard(i)
            current = trial
    chosen = sorted(kept, key=lambda i: -drops[i])
    removed = sorted(set(range(space.numel)) - kept, key=lambda i: -drops[i])
    wall = time.perf_counter() - started
    return Ranking("greedy_backward", [chosen + removed], wall, space.numel + 1, chosen=chosen)


def _gradient_at(ctx: Context, alpha: float) -> torch.Tensor:
    """∂(mean effect)/∂z over the evaluation pairs at z = alpha for every component."""
    tracer = ctx.tracer
    z = tracer.space.full(alpha, device=tracer.device, requires_grad=True)
    n = sum(batch.n_pairs for batch, _ in ctx.train_prep)
    for batch, cache in ctx.train_prep:
        effect = effect_of(tracer.delta(batch, z, cache), tracer.effect).sum() / n
        effect.backward()
    return tracer.space.flatten({k: v.grad for k, v in z.items()}).detach().cpu()


@baseline("atp")
def atp(ctx: Context) -> Ranking:
    started = time.perf_counter()
    grad = _gradient_at(ctx, 0.0)
    return Ranking("atp", [_by_value(grad)], time.perf_counter() - started, forwards=2, backwards=1)


@baseline("atp_ig")
def atp_ig(ctx: Context) -> Ranking:
    steps = ctx.options.steps
    started = time.perf_counter()
    grad = sum(_gradient_at(ctx, j / steps) for j in range(1, steps + 1)) / steps
    wall = time.perf_counter() - started
    return Ranking("atp_ig", [_by_value(grad)], wall, forwards=1 + steps, backwards=steps)


BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # HardConcrete temperature and stretch (Louizos et al.)


def hard_concrete_gate(log_alpha: torch.Tensor, generator=None) -> torch.Tensor:
    u = torch.rand(log_alpha.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(log_alpha.device)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def expected_l0(log_alpha: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA)).sum()


@baseline("hardconcrete")
def hardconcrete(ctx: Context) -> Ranking:
    tracer, space, search = ctx.tracer, ctx.tracer.space, ctx.search
    epochs, loss, lam, schedule = search.epochs, search.loss, float(search.lambda1), search.schedule
    started = time.perf_counter()
    log_alpha = space.full(0.0, device=tracer.device, requires_grad=True)
    opt = torch.optim.Adam([{"params": [log_alpha[g.kind]], "lr": search.rate(g.kind)} for g in space.groups])
    g = torch.Generator().manual_seed(ctx.seed)
    rng, pairs = random.Random(ctx.seed), list(ctx.train_idx)
    scale = loss_scale(tracer, pairs, loss)
    for epoch in range(epochs):
        rng.shuffle(pairs)
        weight = penalty_weight(schedule, lam, epoch)
        for start in range(0, len(pairs), tracer.batch_size):
            batch = tracer.batch(pairs[start : start + tracer.batch_size])
            cache = tracer.source_cache(batch)
            gates = {k: hard_concrete_gate(v, g) for k, v in log_alpha.items()}
            delta = tracer.delta(batch, gates, cache)
            objective = effect_loss(delta, tracer.effect, loss, scale) + weight * expected_l0(
                space.flatten(log_alpha)
            )
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
    flat = space.flatten(log_alpha).detach().cpu()
    gate = (torch.sigmoid(flat) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
    order = _by_value(flat)
    chosen = [i for i in order if gate[i] >= 0.5]
    wall = time.perf_counter() - started
    return Ranking("hardconcrete", [order], wall, forwards=2 * epochs, backwards=epochs, chosen=chosen)


@baseline("random")
def random_orders(ctx: Context) -> Ranking:
    draws = ctx.options.random_draws
    rng = random.Random(ctx.seed)
    orders = [rng.sample(range(ctx.numel), ctx.numel) for _ in range(draws)]
    return Ranking("random", orders, 0.0, forwards=0)


@baseline("all")
def everything(ctx: Context) -> Ranking:
    return Ranking("all", [list(range(ctx.numel))], 0.0, forwards=1, chosen=list(range(ctx.numel)))
