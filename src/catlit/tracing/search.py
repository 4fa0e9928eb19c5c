"""Penalized gradient-based multi-component causal tracing (PGB-CT): learn one soft mask z in [0, 1].

The model stays frozen; the only trainable tensors are the mask's groups (one per component kind),
initialised to `init`. Each step minimises

    effect loss (exp(−mean Δ / u) by default)  +  λ1(t)·Σ|z|  +  λ2(t)·Σ z(1−z)

with Adam (one learning rate per component kind) and clamps z to [0, 1] after the step (projected
gradient). λ(t) follows a schedule on the epoch t: constant λ, linear λ(t+1), exp λ·2^t, poly λ·t².
The final set is every component with z >= threshold, or the k largest z.

Each step backs the effect loss of a batch of `batch_size` pairs, `chunk` pairs per forward and
backward (gradient accumulation: the same step, bounded memory). `restarts` > 1 runs the search again
from knock-out and random starting masks and keeps the best (see `pgbct`).

Cost: epochs × (2 forward + 1 backward) passes over the pairs (the source run and the patched run),
plus one forward and backward for the tie-breaking gradient; × restarts.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch

from catlit.schedules import Schedule
from catlit.tracing.effects import effect_loss
from catlit.tracing.engine import Tracer
from catlit.tracing.settings import SearchSettings

# the release's names -> catlit's schedule table (catlit.schedules)
SCHEDULES = {"constant": "constant", "linear": "grow_linear", "exp": "grow_exp", "poly": "grow_poly"}


def penalty_weight(schedule: str, lam: float, epoch: int) -> float:
    if schedule not in SCHEDULES:
        raise ValueError(f"search.schedule={schedule!r}; choose from {sorted(SCHEDULES)}")
    return Schedule(lam, SCHEDULES[schedule])(epoch=epoch)


@dataclass
class SearchResult:
    z: torch.Tensor  # flat, in the component space's order
    history: list[torch.Tensor] = field(default_factory=list)  # z after each epoch
    losses: list[float] = field(default_factory=list)  # mean total loss per epoch
    wall_s: float = 0.0
    gain: torch.Tensor | None = None  # −∂(effect loss)/∂z at the final z, for ranking ties
    objective: float = float("nan")  # hard objective of the thresholded set (see `pgbct`)
    restarts: list[tuple[float, int]] = field(default_factory=list)  # (objective, set size) per start

    def ranking(self) -> list[int]:
        """Components by final z. Many end tied at 0 or 1; ties go by the effect gradient at the
        final mask (how much raising z would still help, penalties left out), else by z summed over
        the epochs (a component the penalties drove out late ranks above one dropped at once)."""
        if self.gain is not None:
            tie = self.gain
        else:
            tie = torch.stack(self.history).sum(0) if self.history else torch.zeros_like(self.z)
        order = torch.argsort(tie, descending=True, stable=True)
        return order[torch.argsort(self.z[order], descending=True, stable=True)].tolist()

    def threshold(self, value: float = 0.5) -> list[int]:
        return [i for i in self.ranking() if self.z[i] >= value]

    def top(self, k: int) -> list[int]:
        return self.ranking()[:k]


def pgbct(
    tracer: Tracer,
    indices: list[int],
    settings: SearchSettings | None = None,
    *,
    seed: int = 0,
    threshold: float = 0.5,
    **changes,
) -> SearchResult:
    """PGB-CT with `settings` (where not given: conf/search/default.yaml's, in batches of the
    tracer's size; `changes` on top, e.g. `epochs=3`) from z = `init`, then `restarts - 1` more
    searches: first knock-out starts (z = `init` with one component of the first search's set at 0,
    in the order of its ranking: a component that wins on its own while it hides a larger joint
    effect is kept out of the start, so the search can see the joint effect), then random starts
    (z uniform in [0, 1], seeded). The search kept is the one whose thresholded set has the lowest
    hard objective on the pairs (effect loss of the hard mask + λ1 × set size: the soft objective at
    a binary z, with λ1 at its own value; the schedule only anneals the search, and its grown
    last-epoch weight would favour any singleton)."""
    if settings is None:
        settings = SearchSettings.preset(batch_size=tracer.batch_size)
    s = settings.replace(**changes) if changes else settings
    started = time.perf_counter()
    scale = loss_scale(tracer, indices, s.loss)
    best, tried, knockouts = None, [], []
    space = tracer.space
    for r in range(s.restarts):
        if r == 0:
            start = space.full(s.init, device=tracer.device)
        elif r <= len(knockouts):
            flat = torch.full((space.numel,), float(s.init), device=tracer.device)
            flat[knockouts[r - 1]] = 0.0
            start = space.unflatten(flat)
        else:
            g = torch.Generator().manual_seed(seed * 7919 + r)
            start = space.unflatten(torch.rand(space.numel, generator=g).to(tracer.device))
        result = _search(tracer, indices, start, s, seed, scale)
        if r == 0:
            knockouts = result.threshold(threshold)
        chosen = result.threshold(threshold)
        effect_loss = hard_objective(tracer, indices, chosen, s.loss, scale)
        result.objective = effect_loss + s.lambda1 * len(chosen)
        tried.append((result.objective, len(chosen)))
        if best is None or result.objective < best.objective:
            best = result
    best.restarts = tried
    best.wall_s = time.perf_counter() - started
    return best


def loss_scale(tracer: Tracer, indices: list[int], loss: str) -> float:
    """The loss's unit, from one evaluation of the full patch on the pairs: |E(all)| for `relative`,
    min(1, |mean Δ(all)|) for `scaled` and `pooled` (see catlit.tracing.effects), 1 otherwise."""
    if loss not in ("relative", "scaled", "pooled"):
        return 1.0
    prepared = tracer.prepare(indices)
    full = tracer.space.full(1.0, device=tracer.device)
    if loss == "relative":
        value = tracer.evaluate(full, prepared)
    else:
        value = tracer.mean_delta(full, prepared)
    if not math.isfinite(value):
        raise FloatingPointError(
            f"PGB-CT: patching every component gives {value}: the model's outputs on the pairs are not "
            "finite (a NaN or inf in its weights?); tracing stops"
        )
    if not abs(value) > 1e-12:
        raise ValueError(
            f"search.loss={loss}: patching every component has no effect on the pairs ({value}); "
            "use search.loss=negative"
        )
    return abs(value) if loss == "relative" else min(1.0, abs(value))


def hard_objective(tracer, indices: list[int], chosen: list[int], loss: str, scale: float = 1.0) -> float:
    """The effect loss of the hard mask on `chosen` over the pairs (no gradient)."""
    mask = tracer.space.from_indices(chosen, tracer.device)
    with torch.no_grad():
        deltas = [tracer.delta(batch, mask, tracer.source_cache(batch)) for batch in tracer.batches(indices)]
    if not deltas:
        return 0.0
    return float(effect_loss(torch.cat(deltas), tracer.effect, loss, scale))


def _chunks(indices: list[int], size: int | None) -> list[list[int]]:
    size = size or len(indices)
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def accumulate_effect_loss(
    tracer: Tracer, indices: list[int], z: dict, loss: str, chunk: int | None, scale: float = 1.0
) -> float:
    """Backward the effect loss over `indices`, `chunk` pairs per forward/backward (the gradient
    adds up to the whole batch's, so the pairs never have to fit in memory at once)."""
    parts = _chunks(indices, chunk)
    if loss == "pooled" and len(parts) > 1:
        return _accumulate_pooled(tracer, indices, parts, z, scale)
    total = 0.0
    for part in parts:
        batch = tracer.batch(part)
        value, _ = tracer.loss(batch, z, tracer.source_cache(batch), loss, scale)
        weighted = value * (len(part) / len(indices))
        _check_finite(weighted)
        weighted.backward()
        total += float(weighted.detach())
    return total


def _accumulate_pooled(tracer: Tracer, indices, parts, z: dict, scale: float) -> float:
    """exp(−mean Δ / u) does not split into a sum over chunks; its gradient is −exp(−m/u)/u · ∂m (m the
    mean Δ over every pair), so one pass without gradient finds m and each chunk backs its share of ∂m:
    the whole batch's gradient, for one more pass without gradient per step (chunk by chunk, so memory
    stays a chunk's)."""
    batches = [tracer.batch(part) for part in parts]
    with torch.no_grad():
        m = sum(float(tracer.delta(b, z, tracer.source_cache(b)).sum()) for b in batches) / len(indices)
    value = torch.tensor(math.exp(-m / scale))
    _check_finite(value)
    for batch in batches:
        share = tracer.delta(batch, z, tracer.source_cache(batch)).sum() / len(indices)
        (-float(value) / scale * share).backward()
    return float(value)


def _check_finite(value: torch.Tensor) -> None:
    if not torch.isfinite(value):
        raise FloatingPointError(
            f"PGB-CT: the effect loss is {value.item()}: the model's outputs on the pairs are not finite "
            "(a NaN or inf in its weights?); tracing stops"
        )


def _search(tracer, indices, start, s: SearchSettings, seed: int, scale: float) -> SearchResult:
    space = tracer.space
    loss, chunk, batch_size = s.loss, s.chunk, s.batch_size
    z = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    opt = torch.optim.Adam([{"params": [z[g.kind]], "lr": s.rate(g.kind)} for g in space.groups])
    rng, order = random.Random(seed), list(indices)
    result = SearchResult(z=space.flatten(z).detach().cpu().clone())
    for epoch in range(s.epochs):
        l1 = penalty_weight(s.schedule, s.lambda1, epoch)
        l2 = penalty_weight(s.schedule, s.lambda2, epoch)
        rng.shuffle(order)
        total, steps = 0.0, 0
        for batch_indices in _chunks(order, batch_size):
            opt.zero_grad(set_to_none=True)
            effect = accumulate_effect_loss(tracer, batch_indices, z, loss, chunk, scale)
            flat = space.flatten(z)
            penalty = l1 * flat.abs().sum() + l2 * (flat * (1 - flat)).sum()
            penalty.backward()
            opt.step()
            with torch.no_grad():
                for tensor in z.values():
                    tensor.clamp_(0.0, 1.0)
            total, steps = total + effect + penalty.item(), steps + 1
        result.history.append(space.flatten(z).detach().cpu().clone())
        result.losses.append(total / max(steps, 1))
    result.z = space.flatten(z).detach().cpu()
    result.gain = effect_gain(tracer, z, order, loss, chunk, scale)
    return result


def effect_gain(
    tracer: Tracer, z: dict, indices: list[int], loss: str, chunk: int | None = None, scale: float = 1.0
) -> torch.Tensor:
    """−∂(effect loss)/∂z over the pairs at `z`: one more forward and backward pass."""
    for tensor in z.values():
        tensor.grad = None
    accumulate_effect_loss(tracer, indices, z, loss, chunk or tracer.batch_size, scale)
    grads = {k: torch.zeros_like(v) if v.grad is None else v.grad for k, v in z.items()}
    return -tracer.space.flatten(grads).detach().cpu()
