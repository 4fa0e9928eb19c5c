"""The benchmark script keeps working (figures themselves are read from its printed table, not asserted)."""

from __future__ import annotations

import math

import pytest
from benchmarks.attention_capture import METHODS, bench_loss, step_worker


def test_loss_benchmark_compares_equal_losses():
    result = bench_loss(batch=2, t=32, reps=1)
    assert result["max_abs_diff_loss"] < 1e-5 and result["max_abs_diff_grad"] < 1e-5
    assert result["loop_ms"] > 0 and result["vectorised_ms"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_step_worker_runs_every_method(method):
    result = step_worker("tiny (2L, 64d)", method, 32, 2, "cpu", 1)
    assert result["step_ms"] > 0 and math.isfinite(result["peak_mb"])
