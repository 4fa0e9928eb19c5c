"""Penalized gradient-based multi-component causal tracing (PGB-CT): learn one soft mask z in [0, 1].

The model stays frozen; the only trainable tensors are the mask's groups (one per component kind),
initialised to `init`. Each step minimises

    effect loss (mean 1/(1+e) by default)  +  λ1(t)·Σ|z|  +  λ2(t)·Σ z(1−z)

with Adam (one learning rate per component kind) and clamps z to [0, 1] after the step (projected
gradient). λ(t) follows a schedule on the epoch t: constant λ, linear λ(t+1), exp λ·2^t, poly λ·t².
The final set is every component with z >= threshold, or the k largest z.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from catlit.schedules import Schedule
from catlit.tracing.engine import Tracer

# the release's names -> catlit's schedule table (catlit.schedules)
SCHEDULES = {"constant": "constant", "linear": "grow_linear", "exp": "grow_exp", "poly": "grow_poly"}
DEFAULT_LR = {"heads": 0.1, "mlp": 0.5, "neurons": 0.5, "attn_blocks": 0.1, "mlp_blocks": 0.1}


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
    epochs: int = 15,
    lr: dict | None = None,
    lambda1: float = 0.05,
    lambda2: float = 0.05,
    schedule: str = "constant",
    loss: str = "inverse",
    init: float = 0.5,
    seed: int = 0,
) -> SearchResult:
    space = tracer.space
    rates = {**DEFAULT_LR, **(lr or {})}
    z = space.full(init, device=tracer.device, requires_grad=True)
    opt = torch.optim.Adam([{"params": [z[g.kind]], "lr": float(rates[g.kind])} for g in space.groups])
    rng, order = random.Random(seed), list(indices)
    result = SearchResult(z=space.flatten(z).detach().clone())
    started = time.perf_counter()
    for epoch in range(epochs):
        l1 = penalty_weight(schedule, lambda1, epoch)
        l2 = penalty_weight(schedule, lambda2, epoch)
        rng.shuffle(order)
        total, steps = 0.0, 0
        for batch in tracer.batches(order):
            cache = tracer.source_cache(batch)
            effect_loss, _ = tracer.loss(batch, z, cache, loss)
            flat = space.flatten(z)
            objective = effect_loss + l1 * flat.abs().sum() + l2 * (flat * (1 - flat)).sum()
            if not torch.isfinite(objective):
                raise FloatingPointError(
                    f"PGB-CT: the objective is {objective.item()} at epoch {epoch}: the model's outputs on "
                    "the pairs are not finite (a NaN or inf in its weights?); tracing stops"
                )
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            with torch.no_grad():
                for tensor in z.values():
                    tensor.clamp_(0.0, 1.0)
            total, steps = total + objective.item(), steps + 1
        result.history.append(space.flatten(z).detach().cpu().clone())
        result.losses.append(total / max(steps, 1))
    result.z = space.flatten(z).detach().cpu()
    result.gain = _effect_gain(tracer, z, order, loss)
    result.wall_s = time.perf_counter() - started
    return result


def _effect_gain(tracer: Tracer, z: dict, indices: list[int], loss: str) -> torch.Tensor:
    """−∂(effect loss)/∂z over the pairs at the final mask: one more forward and backward pass."""
    for tensor in z.values():
        tensor.grad = None
    n = len(indices)
    for batch in tracer.batches(indices):
        effect_loss, _ = tracer.loss(batch, z, tracer.source_cache(batch), loss)
        (effect_loss * batch.n_pairs / n).backward()
    return -tracer.space.flatten({k: v.grad for k, v in z.items()}).detach().cpu()
