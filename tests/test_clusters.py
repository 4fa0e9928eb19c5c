"""Where users outgrow one machine: Hydra's submitit launcher (SLURM, and its local executor here),
parallel Optuna workers on one study. SLURM itself cannot run here; its settings are composed and
checked, and the same launcher runs each job as a process of its own through submitit's local executor."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from catlit.cli import config_dir
from tests.helpers.runs import ROOT, SMALL_DATA

QUICK = [*SMALL_DATA, "logger=csv", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (hydra-submitit-launcher)"
)


def launcher(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg.hydra.launcher


def test_the_slurm_launcher_asks_for_one_task_per_gpu_and_requeues():
    slurm = launcher(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "hydra.launcher.partition=gpu"
    )
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.nodes, slurm.tasks_per_node, slurm.gpus_per_node) == (1, 4, 4)
    assert slurm.partition == "gpu" and slurm.max_num_timeout == 3 and slurm.timeout_min == 240
    assert launcher("hydra/launcher=local")._target_.endswith("LocalLauncher")


@pytest.mark.slow
def test_a_multirun_through_submitit_runs_each_job_in_its_own_process(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=local",
        "seed=1,2",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    assert len(jobs) == 2  # submitit's local job ids are the processes' pids: two processes
    for job in ("0", "1"):
        assert "test/ood/acc" in (sweep / job / "metrics.json").read_text()
    report = subprocess.run([sys.executable, "report.py", str(sweep), "--out", str(tmp_path / "report")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| 2 |" in (tmp_path / "report" / "report.md").read_text()  # both seeds in one row


def optuna_cmd(storage: str, sweep: Path, trials: int, seed: int) -> list[str]:
    sweeper = {"storage": storage, "study_name": "shared", "n_trials": trials, "sampler.seed": seed}
    return [
        sys.executable, "train.py", "hparams_search=stg_optuna", *QUICK, f"hydra.sweep.dir={sweep}",
        *(f"hydra.sweeper.{k}={v}" for k, v in sweeper.items()),
    ]  # fmt: skip


def trials(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.mark.slow
def test_two_optuna_workers_share_one_study_and_a_killed_study_resumes(tmp_path):
    db = tmp_path / "optuna.db"
    storage = f"sqlite:///{db}"
    # the study is created once before its workers start (two workers creating one database race)
    create = [
        "optuna",
        "create-study",
        "--storage",
        storage,
        "--study-name",
        "shared",
        "--direction",
        "maximize",
    ]
    assert (
        subprocess.run(
            [str(Path(sys.executable).parent / create[0]), *create[1:]], capture_output=True
        ).returncode
        == 0
    )
    workers = [
        subprocess.Popen(
            optuna_cmd(storage, tmp_path / f"w{i}", 2, seed),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, seed in enumerate((1, 2))
    ]
    for w in workers:
        _, err = w.communicate(timeout=900)
        assert w.returncode == 0, err[-3000:]
    assert trials(db) == [(n, "COMPLETE") for n in range(4)]  # 2 + 2 trials of one study

    # a third worker killed in its second trial; the study is still there for the next one
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    killed = subprocess.Popen(
        optuna_cmd(storage, tmp_path / "w2", 3, 3), cwd=ROOT, start_new_session=True, **quiet
    )
    deadline = time.time() + 600
    while not (tmp_path / "w2" / "1").is_dir() and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    states = dict(trials(db))
    assert states[4] == "COMPLETE" and states[5] == "RUNNING"  # what the kill left

    done = subprocess.run(
        optuna_cmd(storage, tmp_path / "w3", 1, 4), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = dict(trials(db))
    assert after[6] == "COMPLETE" and sum(s == "COMPLETE" for s in after.values()) == 6  # resumed: 7th trial
