"""The default search loss, `scaled`: the paper's inverse loss wherever patching every component moves
the score by a unit or more, and the same loss in units of the full patch's Δ where the effect is
smaller, so that a small effect is not drowned by penalties sized for large ones."""

from __future__ import annotations

import pytest
import torch

from catlit.tracing import circuits
from catlit.tracing.effects import effect_loss
from catlit.tracing.search import loss_scale, pgbct
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


def test_the_default_search_uses_the_scaled_loss():
    assert SearchSettings.preset().loss == "scaled"


def test_scaled_loss_is_the_inverse_loss_in_units_of_u():
    delta = torch.tensor([0.05, 0.2, -0.1])
    assert torch.isclose(effect_loss(delta, "odds", "scaled", 0.1), torch.exp(-delta / 0.1).mean())
    assert torch.isclose(effect_loss(delta, "odds", "scaled", 1.0), effect_loss(delta, "odds", "inverse"))


@pytest.mark.parametrize("target, small", [(3.0, False), (0.1, True)])
def test_the_unit_is_the_full_patch_mean_delta_capped_at_one(target, small):
    case = circuits.build("inhibitor", "llama", target=target)
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    by_hand = abs(full_patch_mean_delta(tracer, indices))
    unit = loss_scale(tracer, indices, "scaled")
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
    # in size): the paper's loss lets λ1 push every z below 0.5; the scaled loss keeps the circuit
    case = circuits.build("inhibitor", family, target=0.1)
    tracer = case.tracer()
    indices = list(range(len(case.pairs)))
    assert pgbct(tracer, indices, loss="inverse").threshold() == []
    chosen = pgbct(tracer, indices, loss="scaled").threshold()
    assert set(case.truth) <= set(chosen)
