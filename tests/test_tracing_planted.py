"""PGB-CT recovers planted circuits, and beats single-component top-k where components act jointly."""

from __future__ import annotations

import pytest

from catlit.models.architectures import Layout
from catlit.tracing import baselines as bl
from catlit.tracing.components import ComponentSpace
from catlit.tracing.engine import Tracer
from catlit.tracing.search import pgbct
from tests.helpers.tracing import (
    ARCHS,
    last_token_pairs,
    orient,
    plant_heads,
    plant_mlp_dims,
    random_pairs,
    synergy_model,
    tiny_model,
)

PLANTED_HEADS = {(0, 1), (2, 3)}


def recovered(tracer, n_pairs: int, **search):
    orient(tracer)
    prepared = tracer.prepare(list(range(n_pairs)))
    full = tracer.evaluate(tracer.space.full(1.0), prepared)
    result = pgbct(tracer, list(range(n_pairs)), **search)
    found = result.threshold(0.5)
    hard = tracer.evaluate(tracer.space.from_indices(found), prepared)
    return found, hard, full


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_heads_are_recovered(arch):
    model = tiny_model(arch, layers=3, tie=False)
    plant_heads(model, PLANTED_HEADS)
    space = ComponentSpace(Layout(model), "heads")
    tracer = Tracer(model, space, random_pairs(n=24), pad_id=0)
    found, hard, full = recovered(tracer, 24)
    planted = {layer * 4 + head for layer, head in PLANTED_HEADS}
    assert found and set(found) <= planted, [space.name(i) for i in found]
    assert full > 0.1 and hard >= 0.5 * full


def test_planted_mlp_dims_are_recovered():
    model = tiny_model("llama", layers=2, tie=False)
    planted_dims = [3, 7, 11]
    plant_mlp_dims(model, planted_dims)
    space = ComponentSpace(Layout(model), "mlp")
    tracer = Tracer(model, space, last_token_pairs(model), pad_id=0)
    found, hard, full = recovered(tracer, 16)
    planted = {space.layout.d_model + d for d in planted_dims}  # the last layer's dims
    assert found and set(found) <= planted, [space.name(i) for i in found]
    assert full > 0.1 and hard >= 0.5 * full


def test_planted_synergy_multi_component_search_beats_topk_and_a_subset_beats_all():
    model, pairs = synergy_model()
    space = ComponentSpace(Layout(model), "heads")
    tracer = Tracer(model, space, pairs, pad_id=0, batch_size=16)
    prepared = tracer.prepare(list(range(len(pairs))))
    single, _ = bl.single_effects(tracer, prepared)
    top2 = bl.topk_of(single, 2)
    assert 2 in top2  # head C has the largest single effect
    result = pgbct(tracer, list(range(len(pairs))), loss="negative", lambda1=10.0)
    found = result.threshold(0.5)
    assert sorted(found) == [0, 1]  # heads A and B, jointly
    joint = tracer.evaluate(space.from_indices(found), prepared)
    assert joint > 2 * tracer.evaluate(space.from_indices(top2), prepared)
    assert joint > tracer.evaluate(space.full(1.0), prepared)  # head D inhibits: all < subset
