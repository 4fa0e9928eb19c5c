"""Faults injected into real runs: a callback that SIGKILLs its own process mid-training."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """SIGKILL the training process once `step` optimizer steps are done: no cleanup, no last save.
    `job`: only in that job of a Hydra multirun (the sweep dies with it, as a killed node's would)."""

    def __init__(self, step: int, job: int | None = None, signal_name: str = "KILL"):
        self.step, self.job = step, job
        self.signum = getattr(signal, f"SIG{signal_name}")
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job:
                return
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True  # a signal that does not kill (USR1) is sent once, as a scheduler sends it
            os.kill(os.getpid(), self.signum)
