"""The losses for small effects. `scaled`: the paper's inverse loss wherever patching every component
moves the score by a unit or more, and the same loss in units of the full patch's Δ where the effect is
smaller, so that a small effect is not drowned by penalties sized for large ones. `pooled` (the default):
the same unit, the pairs' Δ averaged before the exponential, so that the few pairs a patch moves the
wrong way do not outweigh the rest."""

from __future__ import annotations

import pytest
import torch

from catlit.tracing import circuits
from catlit.tracing.effects import effect_loss
from catlit.tracing.search import accumulate_effect_loss, hard_objective, loss_scale, pgbct
from catlit.tracing.settings import SearchSettings


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def full_patch_mean_delta(tracer, indices) -> float:
    """Mean Δ of patching every component, written out from the tracer's per-pair Δ."""
    full = tracer.space.full(1.0)
    deltas = []
    with torch.no_grad():
        for batch, cache in tracer.prepare(indices):
            deltas.append(tracer.delta(batch, full, cache))
    return float(torch.cat(deltas).mean())


def test_the_default_search_uses_the_pooled_loss():
    assert SearchSettings.preset().loss == "pooled"


def test_scaled_loss_is_the_inverse_loss_in_units_of_u():
    delta = torch.tensor([0.05, 0.2, -0.1])
    assert torch.isclose(effect_loss(delta, "odds", "scaled", 0.1), torch.exp(-delta / 0.1).mean())
    assert torch.isclose(effect_loss(delta, "odds", "scaled", 1.0), effect_loss(delta, "odds", "inverse"))


def test_pooled_loss_is_the_inverse_loss_of_the_mean_delta_in_units_of_u():
    delta = torch.tensor([0.05, 0.2, -0.1])
    assert torch.isclose(effect_loss(delta, "odds", "pooled", 0.1), torch.exp(torch.tensor(-0.15 / 3 / 0.1)))
    same = torch.full((4,), 0.7)  # pairs the patch moves alike: pooled and per pair agree
    assert torch.isclose(effect_loss(same, "odds", "pooled", 1.0), effect_loss(same, "odds", "inverse"))


def test_pooled_loss_weighs_every_pair_alike_where_the_per_pair_loss_follows_the_worst():
    # Winogender on SmolLM2 in small: mean Δ(all) 0.03 and per-pair Δ from -0.2 to 0.47
    delta = torch.tensor([-0.2, -0.1, 0.0, 0.02, 0.03, 0.05, 0.1, 0.3, 0.47], requires_grad=True)
    unit = float(delta.detach().mean())
    weights = {}
    for loss in ("scaled", "pooled"):
        (grad,) = torch.autograd.grad(effect_loss(delta, "odds", loss, unit), delta)
        weights[loss] = grad.abs() / grad.abs().sum()
    assert weights["scaled"][0] > 0.5  # the one pair the patch moves furthest the wrong way decides the step
    assert torch.allclose(weights["pooled"], torch.full((9,), 1 / 9))


@pytest.mark.parametrize("loss", ["scaled", "pooled"])
@pytest.mark.parametrize("target, small", [(3.0, False), (0.1, True)])
def test_the_unit_is_the_full_patch_mean_delta_capped_at_one(target, small, loss):
    case = circuits.build("inhibitor", "llama", target=target)
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    by_hand = abs(full_patch_mean_delta(tracer, indices))
    unit = loss_scale(tracer, indices, loss)
    assert (by_hand < 1.0) == small
    assert unit == pytest.approx(min(1.0, by_hand), rel=1e-5)


def test_where_the_full_patch_moves_a_unit_or_more_the_search_is_the_papers_loss():
    case = circuits.build("and", "qwen2")  # the planted pair moves the log odds by 3
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    scaled, inverse = pgbct(tracer, indices, loss="scaled"), pgbct(tracer, indices, loss="inverse")
    assert torch.allclose(scaled.z, inverse.z)
    assert sorted(scaled.threshold()) == sorted(case.truth)


@pytest.mark.parametrize("family", circuits.FAMILIES)
def test_a_small_effect_is_not_drowned_by_the_penalties(family):
    # an inhibitor circuit whose joint effect moves the log odds by 0.1 (odds x 1.1, a real model's bias
    # in size): the paper's loss lets λ1 push every z below 0.5; the scaled and pooled losses keep it
    case = circuits.build("inhibitor", family, target=0.1)
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    assert pgbct(tracer, indices, loss="inverse").threshold() == []
    for loss in ("scaled", "pooled"):
        assert set(case.truth) <= set(pgbct(tracer, indices, loss=loss).threshold()), loss


@pytest.mark.parametrize("name", ["and", "or"])
def test_the_pooled_loss_selects_the_joint_circuits_exactly(name):
    case = circuits.build(name, "llama")
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    assert sorted(pgbct(tracer, indices, loss="pooled").threshold()) == sorted(case.truth)


def test_pooled_loss_in_chunks_backs_the_whole_batchs_gradient():
    # exp(-mean Δ / u) is not a sum over chunks: chunked, the search backs -exp(-m/u)/u · ∂m with m over
    # every pair, so a step's gradient does not depend on how the batch is cut
    case = circuits.build("and", "gpt2", target=0.1)
    tracer = case.tracer(batch_size=5)
    indices = list(range(12))
    unit = loss_scale(tracer, indices, "pooled")
    grads, values = [], []
    for chunk in (None, 5):
        z = {k: v.clone().requires_grad_(True) for k, v in tracer.space.full(0.5).items()}
        values.append(accumulate_effect_loss(tracer, indices, z, "pooled", chunk, unit))
        grads.append(tracer.space.flatten({k: v.grad for k, v in z.items()}))
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    # and the hard objective pools every pair, whatever the tracer's batches
    chosen = list(case.truth)
    deltas = torch.cat(
        [tracer.delta(b, tracer.space.from_indices(chosen), c) for b, c in tracer.prepare(indices)]
    )
    by_hand = float(torch.exp(-deltas.mean() / unit))
    assert hard_objective(tracer, indices, chosen, "pooled", unit) == pytest.approx(by_hand, rel=1e-5)
