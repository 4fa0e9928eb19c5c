"""The trackers' loggers: Lightning's WandbLogger minus a setting that wandb has deprecated (it warns on
every run), MLflow's with a file store (the store that needs no server) allowed, and TensorBoard's
with one event file per run."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _WandbLogger


class WandbLogger(_WandbLogger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


class MLFlowLogger(_MLFlowLogger):
    """Lightning's MLFlowLogger. MLflow 3 refuses a `file:` tracking URI unless told it is wanted; a
    file store is what `logger=mlflow` writes by default (`<run dir>/mlruns`, read back with
    `mlflow ui --backend-store-uri <that folder>`), so it is allowed for such a URI."""

    def __init__(self, *args, tracking_uri: str | None = None, **kwargs):
        if tracking_uri and tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().__init__(*args, tracking_uri=tracking_uri, **kwargs)


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoardLogger, its writer closed once, when the run ends. Lightning finalizes a
    logger after fit and again after test; closing the writer there made test open a new event file,
    and tensorboardX names event files by the second and host, so a test that began within the second
    fit ended in overwrote the training scalars. `finalize` flushes (everything is on disk after fit);
    `finish_loggers` closes."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()

    def close(self) -> None:
        super().finalize("success")


def finish_loggers(loggers: list) -> None:
    """Close this job's TensorBoard writer and wandb run (multirun jobs share a process) and say where
    wandb's files are."""
    from lightning.pytorch.utilities import rank_zero_only

    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.close()
        if isinstance(lg, _WandbLogger):
            import wandb

            folder = wandb.run.dir.removesuffix("/files") if wandb.run else None
            offline = wandb.run is not None and wandb.run.settings._offline
            wandb.finish()
            if folder and rank_zero_only.rank == 0:
                how = f"upload it with: wandb sync {folder}" if offline else "synced online"
                print(f"wandb run: {folder} ({how})", flush=True)
