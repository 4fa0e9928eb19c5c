"""Kill a run anywhere, resume it, and get the uninterrupted run's weights and figures exactly (bitwise:
which also means two uninterrupted runs of one seed agree bitwise)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import ROOT, SMALL_DATA

RUN = [
    *SMALL_DATA,
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "trainer.max_epochs=3",
    "seed=7",
    "+model.arch.attention_dropout=0.1",  # dropout draws random numbers: resume must continue their stream
]
STEPS_PER_EPOCH = 4  # 64 training rows, batch 16


def train_py(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def final_state(run_dir: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("time/wall_s")
    return ckpt["state_dict"], metrics


def assert_equal_runs(resumed: Path, whole: Path) -> None:
    expected_weights, expected_metrics = final_state(whole)
    weights, metrics = final_state(resumed)
    assert metrics == expected_metrics
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), name
    # the best checkpoint is the same epoch, held in the resumed run's own directory
    (best_whole,) = (whole / "checkpoints").glob("best-*.ckpt")
    (best_resumed,) = (resumed / "checkpoints").glob("best-*.ckpt")
    assert best_resumed.name == best_whole.name


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cat_share", "iclm"])  # ICLM: router, codebook, head and adapters too
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, method):
    whole = tmp_path / "whole"
    assert train_py(whole, f"method={method}").returncode == 0

    killed = tmp_path / "killed"
    # SIGKILL in the middle of the second epoch: the newest checkpoint is the first epoch's
    result = train_py(
        killed,
        f"method={method}",
        "+callbacks.kill._target_=tests.helpers.faults.KillAt",
        f"+callbacks.kill.step={STEPS_PER_EPOCH + 2}",
    )
    assert result.returncode == -9, result.stderr[-2000:]
    assert not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0

    places = [tmp_path / "resumed"] + ([killed] if method == "cat_share" else [])  # a new run dir, its own
    for resumed in places:
        result = train_py(resumed, f"method={method}", f"ckpt_path={last}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert_equal_runs(resumed, whole)


def test_a_resume_that_changes_the_run_is_refused_and_one_that_extends_it_is_not(tmp_path):
    from catlit.errors import ConfigError
    from tests.helpers.runs import train

    _, _, _, run_dir = train(tmp_path, "method=cat_share")
    last = run_dir / "checkpoints" / "last.ckpt"
    written = (run_dir / "config.yaml").read_text()
    for override, key in (
        ("method=baseline", "method.name: 'cat_share' -> 'baseline'"),
        ("seed=7", "seed: 42 -> 7"),
    ):
        with pytest.raises(ConfigError, match=re.escape(key)):
            train(tmp_path, "method=cat_share", override, f"ckpt_path={last}")
        assert (run_dir / "config.yaml").read_text() == written  # nothing rewritten before the refusal
    _, _, metrics, _ = train(
        tmp_path, "method=cat_share", "trainer.max_epochs=2", "logger=none", f"ckpt_path={last}"
    )
    assert "test/iid/acc" in metrics
