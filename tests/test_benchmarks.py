"""The benchmark script keeps working (figures themselves are read from its printed table, not asserted)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from benchmarks.attention_capture import METHODS, bench_loss, step_worker
from benchmarks.iclm_cost import CONFIGS as ICLM_CONFIGS
from benchmarks.iclm_cost import step_worker as iclm_step_worker
from benchmarks.tracing_search import SEARCHES, compare


def test_loss_benchmark_compares_equal_losses():
    result = bench_loss(batch=2, t=32, reps=1)
    assert result["max_abs_diff_loss"] < 1e-5 and result["max_abs_diff_grad"] < 1e-5
    assert result["loop_ms"] > 0 and result["vectorised_ms"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_step_worker_runs_every_method(method):
    result = step_worker("tiny (2L, 64d)", method, 32, 2, "cpu", 1)
    assert result["step_ms"] > 0 and math.isfinite(result["peak_mb"])


def test_tracing_benchmark_scores_every_search_at_every_size():
    rows, notes, everything, times = compare(2, 4, 16, [1, 3], n_pairs=4, length=6, epochs=2)
    assert [r["size"] for r in rows] == [1, 3] and len(notes) == len(SEARCHES)
    assert math.isfinite(everything)
    methods = {*(f"PGB-CT {n}" for n in SEARCHES), "atp", "atp_ig", "greedy"}
    for row in rows:
        assert set(row) == {"size", "greedy time", *methods}
        assert all(math.isfinite(row[m]) for m in methods) and row["greedy time"] > 0
    assert set(times) == methods - {"greedy"} and all(t > 0 for t in times.values())
    # greedy's first pick is the best single component: no other single component does better
    for name in methods:
        assert rows[0]["greedy"] >= rows[0][name] - 1e-6
    rows, _, _, _ = compare(2, 4, 16, [1, 3], n_pairs=4, length=6, epochs=2, greedy=False)  # --no-greedy
    assert all("greedy" not in row and math.isnan(row["greedy time"]) for row in rows)


def test_tracing_suite_prints_every_method_and_case(capsys):
    from benchmarks import tracing_suite

    argv, sys.argv = (
        sys.argv,
        ["tracing_suite.py", "--quick", "--cases", "and,null", "--no-study", "--no-decoy"],
    )
    try:
        tracing_suite.main()
    finally:
        sys.argv = argv
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    methods = {line.split("|")[1].strip() for line in rows[1:]}
    assert methods == set(tracing_suite.METHODS)
    pgbct = next(line for line in rows if line.startswith("| pgbct |"))
    assert pgbct.split("|")[2].strip() == "1.00 / 1.00" and "excess -" in pgbct.split("|")[3]


@pytest.mark.parametrize("config", ICLM_CONFIGS)
def test_iclm_cost_worker_runs_every_configuration(config):
    result = iclm_step_worker("tiny (2L, 64d)", config, 16, 2, "cpu", 1, True)
    assert result["step_ms"] > 0 and math.isfinite(result["peak_mb"])


def test_gpu_check_runs_its_code_paths_on_a_tiny_model_on_cpu(capsys):
    import sys

    from benchmarks import gpu_check

    argv, sys.argv = sys.argv, ["gpu_check.py", "--device", "cpu", "--tiny", "--lengths", "32", "--reps", "1"]
    try:
        gpu_check.main()
    finally:
        sys.argv = argv
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if line.startswith(("| lora", "| full"))]
    assert len(rows) == 2
    for row in rows:  # plain and CAT tokens/s are positive; CAT pays for its capture
        plain, cat = (float(x) for x in row.split("|")[4:6])
        assert plain > 0 and cat > 0
    traced = [line for line in printed if line.startswith(("| PGB-CT", "| AtP"))]
    assert len(traced) == 3 and all(line.split("|")[2].strip().endswith(" s") for line in traced)


@pytest.mark.real_model
def test_real_model_benchmark_times_a_cat_step_on_smollm2(smollm2):
    from benchmarks.real_model_cpu import step_worker

    result = step_worker("lora", "bf16-mixed", "cat", 2, 1)
    assert result["step_s"] > 0 and result["tokens_per_s"] > 0
    assert result["shape"][0] == 16 and 40 <= result["shape"][1] <= 48  # the STG toy batch on SmolLM2


@pytest.mark.real_model
def test_real_model_benchmark_measures_the_answer_only_evaluation_loss(smollm2):
    from benchmarks.real_model_cpu import eval_worker

    full, answers = eval_worker("full logits", 2), eval_worker("answer only", 2)  # in this process
    assert answers["ce"] == pytest.approx(full["ce"], rel=1e-4)  # the same loss
    assert full["shape"][0] == answers["shape"][0] == 128 and full["s"] > 0 and answers["s"] > 0


def test_pair_deltas_shows_the_per_pair_loss_following_its_worst_pair():
    from benchmarks.pair_deltas import weights

    delta = torch.tensor([-0.2, 0.0, 0.03, 0.1, 0.47])
    scaled, pooled = (weights(delta, "odds", loss, 0.03) for loss in ("scaled", "pooled"))
    assert scaled.sum().item() == pytest.approx(1.0) and scaled.argmax().item() == 0 and scaled[0] > 0.9
    assert torch.allclose(pooled, torch.full((5,), 0.2))


def test_effect_resolution_reports_each_held_out_splits_interval_by_hand():
    import statistics

    from benchmarks.effect_resolution import pairs_needed, report

    from catlit.stats import t95
    from catlit.tracing.run import split_indices

    effects = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2, 0.1, 0.4, -0.3, 0.6]
    text = report(lambda seed: effects, [1, 2], [0.5])
    for seed in (1, 2):
        held = [effects[i] for i in split_indices(len(effects), 0.5, seed)[1]]
        half = t95(4) * statistics.stdev(held) / 5**0.5
        holds = "yes" if abs(statistics.mean(held)) <= half else "no"
        assert f"| {seed} | 0.5 | 5 | {statistics.mean(held):.4f} ± {half:.4f} | {holds} |" in text
    assert pairs_needed(1.0, 0.5) == math.ceil((1.96 / 0.125) ** 2) == 246
    assert pairs_needed(1.0, 0.0) == math.inf


def test_effect_resolution_denominator_is_the_traces_all_components_effect(tmp_path, stg_corpus):
    from benchmarks.effect_resolution import pair_effects

    from catlit.tracing.run import setup
    from tests.helpers.models import save_tiny_checkpoint
    from tests.helpers.runs import compose_cfg

    folder = save_tiny_checkpoint(tmp_path / "llama", "llama", stg_corpus)
    cfg = compose_cfg(tmp_path, [f"model.path={folder}", "pairs.limit=12"], config_name="trace")
    torch.manual_seed(0)
    effects = pair_effects(cfg)
    tracer, train, held, _ = setup(cfg)
    assert len(effects) == len(train) + len(held) == 12
    full = tracer.space.full(1.0, device=tracer.device)
    expected = tracer.evaluate(full, tracer.prepare(held))  # what the trace scores `all` with
    assert sum(effects[i] for i in held) / len(held) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert any(abs(e) > 1e-6 for e in effects)
