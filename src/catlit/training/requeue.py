"""Stop at an epoch boundary on a signal, and resume in place.

A cluster warns a job before its time limit with a signal (SLURM: `#SBATCH --signal=USR1@300`).
`Requeue` (a callback, `callbacks.requeue`) then lets the epoch in progress finish — its checkpoint
is written as at every epoch end — and stops training; `train.py` asks the scheduler to requeue the
job (`scontrol requeue $SLURM_JOB_ID`, where SLURM runs it) and exits without results. The requeued
job runs the same command: with `ckpt_path=auto` it resumes from the newest loadable checkpoint in
its run directory, and ends with exactly the figures an uninterrupted run has (an epoch-end
checkpoint resumes bit for bit; a checkpoint from the middle of an epoch would not).

Lightning's own SLURM handler saves in the middle of an epoch and is switched off where this callback
is used (`auto_requeue=False`). If the time limit comes before the epoch ends, the scheduler's kill
leaves the previous epoch's checkpoint, which `ckpt_path=auto` resumes just the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from catlit.rundir import FINISHED
from catlit.training.checkpoints import newest_loadable

AUTO = "auto"


class StoppedForRequeue(Exception):
    """Training stopped at an epoch end on the signal: no test, no results."""

    def __init__(self, callback: Requeue):
        super().__init__("stopped for requeue")
        self.callback = callback


class Requeue(Callback):
    def __init__(self, signal_name: str = "USR1"):
        self.signum = getattr(signal, f"SIG{signal_name.upper().removeprefix('SIG')}")
        self.requested = False
        self._previous = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._previous = signal.signal(self.signum, self._request)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _request(self, signum, frame) -> None:
        self.requested = True  # acted on at the epoch's end; nothing else runs inside a signal handler

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.requested:
            trainer.should_stop = True

    @staticmethod
    def check(trainer) -> None:
        """After a fit: raise StoppedForRequeue where the fit stopped on the signal."""
        for callback in trainer.callbacks:
            if isinstance(callback, Requeue) and callback.requested:
                raise StoppedForRequeue(callback)

    def requeue(self, run_dir: Path) -> str:
        """Ask the scheduler to run the job again; returns what was done, for the console."""
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
        resume = f"the same command with ckpt_path=auto resumes it from {run_dir}/checkpoints"
        if not job:
            return f"stopped at an epoch end on signal {signal.Signals(self.signum).name}; {resume}"
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        except FileNotFoundError:
            return f"stopped; scontrol was not found to requeue SLURM job {job}; {resume}"
        if done.returncode != 0:
            return f"stopped; scontrol requeue {job} failed ({done.stderr.strip()[:200]}); {resume}"
        return f"stopped at an epoch end; SLURM job {job} requeued: {resume}"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest loadable checkpoint of a run directory (its checkpoints/ folder, and the hpc_ckpt_*
    files Lightning's own SLURM handler writes into the run directory), or None."""
    return newest_loadable(
        [*Path(run_dir).glob("checkpoints/*.ckpt"), *Path(run_dir).glob("hpc_ckpt_*.ckpt")]
    )


def resolve_auto(cfg: DictConfig) -> dict | None:
    """`ckpt_path=auto`: the metrics of a run directory that holds a finished run (nothing to do: a
    rerun sweep skips it), else None with `cfg.ckpt_path` set to the directory's newest loadable
    checkpoint (null where there is none yet: the run starts)."""
    run_dir = Path(cfg.paths.output_dir)
    if (run_dir / FINISHED).is_file():
        print(f"run directory {run_dir} holds a finished run: skipped (ckpt_path=auto)", flush=True)
        return json.loads((run_dir / FINISHED).read_text())
    newest = newest_checkpoint(run_dir)
    with open_dict(cfg):
        cfg.ckpt_path = str(newest) if newest else None
    print(
        f"ckpt_path=auto: {f'resuming from {newest}' if newest else 'no checkpoint yet: starting'}",
        flush=True,
    )
    return None
