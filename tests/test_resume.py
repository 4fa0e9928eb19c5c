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


SLURM = {  # what SLURM sets for a one-task batch job (Lightning reads these to pick its SLURM environment)
    "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "catlit-sweep",
    "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
}  # fmt: skip


def fake_scontrol(folder: Path) -> dict:
    """`scontrol` cannot exist here: a stand-in at the protocol level, which records the command it got
    (SLURM would then kill the job and run its script again)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder / "calls"}\n')
    script.chmod(0o755)
    import os

    return {**os.environ, **SLURM, "PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.slow
def test_the_requeue_signal_stops_at_an_epoch_end_and_the_rerun_equals_the_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    assert train_py(whole, "method=cat_share").returncode == 0

    env = fake_scontrol(tmp_path / "bin")
    run_dir = tmp_path / "requeued"
    signalled = [  # SIGUSR1 in the middle of the second epoch, as SLURM's --signal=USR1@<s> sends it
        "ckpt_path=auto",
        "+callbacks.warn._target_=tests.helpers.faults.KillAt",
        f"+callbacks.warn.step={STEPS_PER_EPOCH + 2}",
        "+callbacks.warn.signal_name=USR1",
    ]
    args = [sys.executable, "train.py", *RUN, "method=cat_share", f"hydra.run.dir={run_dir}", *signalled]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "SLURM job 4242 requeued" in first.stdout
    assert (tmp_path / "bin" / "calls").read_text() == "requeue 4242\n"
    assert not (run_dir / "metrics.json").exists()  # stopped: no test, no results
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1  # epoch 2 done

    # the requeued job runs the same script: ckpt_path=auto takes the run directory back and resumes
    args = [a for a in args if not a.startswith("+callbacks.warn")]
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ckpt_path=auto: resuming from" in second.stdout
    assert_equal_runs(run_dir, whole)


@pytest.mark.slow
def test_a_killed_sweep_rerun_skips_finished_jobs_resumes_the_killed_one_and_starts_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", *RUN, "trainer.max_epochs=2", "method=baseline",
               "seed=1,2,3", f"hydra.sweep.dir={sweep}", "ckpt_path=auto"]  # fmt: skip
    kill = ["+callbacks.kill._target_=tests.helpers.faults.KillAt", "+callbacks.kill.job=1",
            f"+callbacks.kill.step={STEPS_PER_EPOCH + 2}"]  # fmt: skip
    first = subprocess.run([*command, *kill], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == -9  # the whole sweep died in its second job
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()
    assert not (sweep / "2").exists()
    done_before = (
        (sweep / "0" / "metrics.json").read_bytes(),
        (sweep / "0" / "metrics.json").stat().st_mtime_ns,
    )

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout
    assert f"run directory {sweep / '0'} holds a finished run: skipped (ckpt_path=auto)" in out
    assert f"ckpt_path=auto: resuming from {sweep / '1' / 'checkpoints'}" in out
    assert "ckpt_path=auto: no checkpoint yet: starting" in out
    assert (
        (sweep / "0" / "metrics.json").read_bytes(),
        (sweep / "0" / "metrics.json").stat().st_mtime_ns,
    ) == done_before
    for job in ("1", "2"):
        assert "test/ood/acc" in json.loads((sweep / job / "metrics.json").read_text())
