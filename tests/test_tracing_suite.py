"""The planted-circuit suite (small sizes), the faithfulness measures, and PGB-CT's options beyond
the paper (gradient accumulation, knock-out restarts)."""

from __future__ import annotations

import math

import pytest
import torch

from catlit.tracing import circuits, suite
from catlit.tracing.baselines import BASELINES, Context
from catlit.tracing.measures import area, auroc, curves, log_sizes
from catlit.tracing.search import loss_scale, pgbct
from catlit.tracing.settings import BaselineSettings, SearchSettings

ONE_AT_A_TIME = ["topk", "greedy", "atp"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add synchronisation
    yield
    torch.set_num_threads(threads)


def by_method(rows):
    return {r.method: r for r in rows}


@pytest.mark.parametrize("name", ["and", "or"])
def test_planted_pairs_neither_member_moves_the_effect_alone(name):
    case = circuits.build(name, "llama")
    tracer = case.tracer()
    prepared = tracer.prepare(list(range(len(case.pairs))))
    space = tracer.space
    joint = tracer.evaluate(space.from_indices(case.truth), prepared)
    singles = [tracer.evaluate(space.from_indices([i]), prepared) for i in case.truth]
    others = [
        tracer.evaluate(space.from_indices([i]), prepared) for i in range(space.numel) if i not in case.truth
    ]
    assert joint > 10 and all(abs(s) < 0.01 * joint for s in singles)
    assert max(others) > max(singles)  # distractors outrank the circuit's members one at a time


@pytest.mark.parametrize("family", circuits.FAMILIES)
@pytest.mark.parametrize("name", ["single", "inhibitor"])
def test_single_and_inhibitor_are_recovered_by_every_family(family, name):
    case = circuits.build(name, family)
    tracer = case.tracer()
    prepared = tracer.prepare(list(range(len(case.pairs))))
    if name == "inhibitor":  # the best subset beats patching everything
        assert tracer.evaluate(tracer.space.from_indices(case.truth), prepared) > 2 * tracer.evaluate(
            tracer.space.full(1.0), prepared
        )
    rows = by_method(suite.run_case(case, ["pgbct", "topk"]))
    assert rows["pgbct"].auroc == 1.0 and rows["pgbct"].effect_at_k > 0.99
    assert sorted(rows["pgbct"].chosen) == sorted(case.truth)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("name", ["and", "or"])
def test_pgbct_finds_joint_circuits_that_one_at_a_time_methods_miss(family, name):
    rows = by_method(suite.run_case(circuits.build(name, family), ["pgbct", "atp_ig", *ONE_AT_A_TIME]))
    assert rows["pgbct"].auroc == 1.0 and rows["pgbct"].effect_at_k > 0.99
    assert rows["atp"].auroc < 0.5 and rows["atp"].effect_at_k < 0.1  # first order sees nothing
    if family != "gpt2":  # GPT-2's and-unit leaks a little through the layer norm
        assert all(rows[m].effect_at_k < 0.1 for m in ONE_AT_A_TIME)


def test_mlp_dimensions_are_recovered():
    case = circuits.build("mlp", "llama")
    rows = by_method(suite.run_case(case, ["pgbct", "atp"]))
    assert len(case.truth) == 3 and rows["pgbct"].auroc == 1.0 and sorted(rows["pgbct"].chosen) == case.truth


@pytest.mark.parametrize("family", circuits.FAMILIES)
def test_no_method_reports_a_circuit_in_a_shuffled_model(family):
    rows = suite.run_case(circuits.build("null", family), ["pgbct", "topk", "greedy", "atp", "hardconcrete"])
    excess = {r.method: r.null_excess for r in rows}
    assert all(v <= 0 for v in excess.values()), excess


def test_knockout_restarts_escape_a_decoy_the_plain_search_falls_into():
    case = circuits.build("decoy", "llama", strength=1.5)
    decoy = case.notes["decoy"]
    rows = by_method(suite.run_case(case, ["pgbct"], variants={"robust": {"restarts": 4}}))
    assert decoy in rows["pgbct"].chosen and rows["pgbct"].effect_at_k < 0.5
    assert sorted(rows["robust"].chosen)[:2] == case.truth and decoy not in rows["robust"].chosen
    assert rows["robust"].effect_at_k > 0.99


def test_chunked_steps_take_the_same_path_as_whole_batches():
    case = circuits.build("and", "llama", n_pairs=16)
    tracer = case.tracer(batch_size=8)
    whole = pgbct(tracer, list(range(16)), epochs=3, batch_size=8)
    chunked = pgbct(tracer, list(range(16)), epochs=3, batch_size=8, chunk=3)
    torch.testing.assert_close(chunked.z, whole.z, atol=1e-5, rtol=1e-5)
    for a, b in zip(chunked.history, whole.history):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.equal(whole.history[0], torch.full_like(whole.history[0], 0.5))


def test_measures_on_hand_made_rankings():
    assert log_sizes(100, 3) == [1, 10, 100] and log_sizes(1, 5) == [1] and log_sizes(8, 8)[-1] == 8
    assert area([1, 10, 100], [1.0, 1.0, 1.0], 100) == pytest.approx(1.0)
    assert area([1, 10, 100], [0.0, 1.0, 1.0], 100) == pytest.approx(0.75)
    assert math.isnan(area([1], [1.0], 1))
    assert auroc([3, 1, 0, 2], {3, 1}) == 1.0 and auroc([0, 2, 3, 1], {3, 1}) == 0.0
    assert auroc([3, 0, 1, 2], {3, 1}) == 0.75 and math.isnan(auroc([0, 1], set()))


def test_curves_of_the_truth_first_ranking_on_a_planted_case():
    case = circuits.build("inhibitor", "llama")
    tracer = case.tracer()
    prepared = tracer.prepare(list(range(len(case.pairs))))
    full = tracer.evaluate(tracer.space.full(1.0), prepared)
    truth_first = [*case.truth, *(i for i in range(tracer.space.numel) if i not in case.truth)]
    sizes = log_sizes(tracer.space.numel, 4)
    out = curves(tracer, prepared, [truth_first], sizes, full)
    at2 = out["sufficiency"][sizes.index(2)]
    assert at2 == pytest.approx(tracer.evaluate(tracer.space.from_indices(case.truth), prepared) / full)
    assert at2 > 2 and out["sufficiency"][-1] == pytest.approx(1.0)  # the inhibitor: a subset beats all
    assert out["necessity"][-1] == pytest.approx(0.0, abs=1e-6)  # nothing left to patch
    assert out["suff_area_log"] > 1 and out["dev_area_log"] > 0


@pytest.mark.parametrize("name", ["greedy_backward", "hardconcrete", "atp_ig"])
def test_new_baselines_return_full_orders_and_their_costs(name):
    case = circuits.build("single", "llama")
    tracer = case.tracer()
    idx = list(range(len(case.pairs)))
    prepared = tracer.prepare(idx)

    def score(s):
        mask = tracer.space.from_indices(s)
        return tracer.evaluate(mask, prepared), float("nan")

    options, search = BaselineSettings.preset(steps=3, tau=0.01), SearchSettings.preset(epochs=3)
    ctx = Context(tracer, prepared, score, 0, options, idx, search, 2)
    ranking = BASELINES[name](ctx)
    assert sorted(ranking.order) == list(range(tracer.space.numel))
    assert ranking.order[0] == case.truth[0]
    assert ranking.forwards > 0 and ranking.wall_s > 0
    if name == "atp_ig":
        assert ranking.passes == "4 F + 3 B"
    if name != "atp_ig":
        assert case.truth[0] in ranking.chosen


def test_relative_loss_is_the_negative_loss_over_the_full_effect():
    case = circuits.build("and", "llama")
    tracer = case.tracer()
    idx = list(range(len(case.pairs)))
    scale = loss_scale(tracer, idx, "relative")
    assert scale == pytest.approx(abs(tracer.evaluate(tracer.space.full(1.0), tracer.prepare(idx))))
    assert loss_scale(tracer, idx, "negative") == 1.0
    batch = tracer.batch(idx[:8])
    cache, mask = tracer.source_cache(batch), tracer.space.full(0.7)
    negative, _ = tracer.loss(batch, mask, cache, "negative")
    relative, _ = tracer.loss(batch, mask, cache, "relative", scale)
    torch.testing.assert_close(relative, negative / scale)
    ranked = pgbct(tracer, idx, epochs=8, loss="relative", lambda1=5e-4, lambda2=5e-4, schedule="constant")
    assert set(ranked.ranking()[:2]) == set(case.truth)


def test_the_suite_runs_the_search_that_search_default_configures():
    from omegaconf import OmegaConf

    from catlit.cli import config_dir

    default = OmegaConf.load(f"{config_dir()}/search/default.yaml")
    assert {k: default[k] for k in suite.SEARCH} == suite.SEARCH


def test_mib_measures_equal_values_computed_by_hand_from_mibs_definition():
    """MIB's circuit track: fractions .001 .. 1 of N, k = int(fraction × N), trapezoid on a linear axis;
    CPR = ∫ f, CMD = ∫ |1 − f|. For N = 270 and the curve below, by hand:
    sizes 0, 0, 1, 2, 5, 13, 27, 54, 135, 270;
    CPR = .003·.1 + .005·.3 + .01·.5 + .03·.7 + .05·.85 + .1·.95 + .3·1 + .5·1 = 0.9653;
    CMD = .001·1 + .003·.9 + .005·.7 + .01·.5 + .03·.3 + .05·.15 + .1·.05 = 0.0337 (CPR + CMD = 0.999)."""
    from catlit.tracing.measures import MIB_FRACTIONS, mib_sizes, trapezoid

    assert mib_sizes(270) == [0, 0, 1, 2, 5, 13, 27, 54, 135, 270]
    assert mib_sizes(32) == [0, 0, 0, 0, 0, 1, 3, 6, 16, 32]  # a planted circuit's model: MIB floors
    f = [0, 0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0, 1.0]
    assert trapezoid(list(MIB_FRACTIONS), f) == pytest.approx(0.9653)
    assert trapezoid(list(MIB_FRACTIONS), [abs(1 - v) for v in f]) == pytest.approx(0.0337)


def test_the_mib_grid_measures_a_real_tracer_as_mib_would():
    """`curves(grid="mib")` on a planted circuit against MIB's formula written out here: f(k) =
    (m(first k) − m(∅)) / (m(all) − m(∅)) at each fraction, the linear trapezoid over the fractions."""
    from catlit.tracing.measures import MIB_FRACTIONS, grid_sizes

    case = circuits.build("and", "llama")
    tracer = case.tracer()
    prepared = tracer.prepare(list(range(len(case.pairs))))
    space, n = tracer.space, tracer.space.numel
    order = [*case.truth, *(i for i in range(n) if i not in case.truth)]
    m = {
        k: tracer.evaluate(space.from_indices(order[:k]), prepared)
        for k in {int(f * n) for f in MIB_FRACTIONS}
    }
    f = [(m[int(x * n)] - m[0]) / (m[n] - m[0]) for x in MIB_FRACTIONS]
    cpr = sum((b - a) * (fa + fb) / 2 for a, b, fa, fb in zip(MIB_FRACTIONS, MIB_FRACTIONS[1:], f, f[1:]))
    cmd = sum(
        (b - a) * (abs(1 - fa) + abs(1 - fb)) / 2
        for a, b, fa, fb in zip(MIB_FRACTIONS, MIB_FRACTIONS[1:], f, f[1:])
    )
    out = curves(tracer, prepared, [order], grid_sizes("mib", n, 0), m[n], grid="mib")
    assert abs(m[0]) < 1e-9  # the empty circuit moves nothing: MIB's m(∅) is the base run
    assert out["sufficiency"] == pytest.approx(f) and out["cpr"] == pytest.approx(cpr)
    assert out["cmd"] == pytest.approx(cmd) and "suff_area_log" not in out
    assert out["necessity"][0] == pytest.approx(1.0) and out["necessity"][-1] == pytest.approx(0.0, abs=1e-6)
