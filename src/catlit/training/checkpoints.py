"""Checkpoints: the best on validation (or, without validation data, the authors' training-loss
rule), carried over when a run is resumed into another run directory."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from catlit.errors import WriteFailed
from catlit.files import atomic_path

log = logging.getLogger(__name__)


SECOND_HALF_TRAIN_LOSS = "train_loss_second_half"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in their own directory, flushed to disk and renamed
    over the old one: a kill or a full disk during a save leaves the previous checkpoint whole.
    (Lightning's default writes through a temporary file in the system temp directory, and where
    that is another filesystem the final move is a copy that a kill can cut short.) Loads are
    weights-only whatever the environment says: a checkpoint runs no code when it is read."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        try:
            with atomic_path(Path(path), suffix=".ckpt.tmp") as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:  # torch reports a failed write as a RuntimeError
            previous = f"; {path} is the previous checkpoint, whole" if Path(path).is_file() else ""
            raise WriteFailed(
                f"checkpoint {path} could not be written ({str(err).splitlines()[0][:160]}): is the disk "
                f"full? Free space, then run the same command with ckpt_path=<the newest checkpoint in "
                f"{Path(path).parent}> to resume{previous}"
            ) from err

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        return load_checkpoint(path, map_location)


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint, weights-only (tensors and plain containers: no code runs), or one error that names
    the file and the newest loadable checkpoint beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        good = newest_loadable(p for p in path.parent.glob("*.ckpt") if p != path)
        offer = f"; the newest loadable one there is {good}: resume with ckpt_path={good}" if good else ""
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"checkpoint {path} cannot be loaded ({reason}){offer}") from None


def newest_loadable(paths) -> Path | None:
    """The newest of `paths` that loads (last.ckpt first among equally new ones), or None."""
    for path in sorted(paths, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True):
        if _loads(path):
            return path
    return None


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that, resumed from another directory, carries its state over.

    Lightning's ModelCheckpoint forgets `best_model_score` when the checkpoint was written under another
    dirpath, so a run resumed into a new run dir would call its first epoch "best" even when an earlier
    epoch scored higher. Here the best checkpoint file is copied into the new directory and the scores
    are kept, so the new run dir is self-contained and selects exactly as an uninterrupted run would.

    `no_validation="train_loss_second_half"`: where the data has no validation split of its own (a
    test split stands in, `Splits.val_is_test`), select as the CAT authors' script does without a
    validation file: the epoch whose summed training loss (`train/epoch_loss`) is the lowest of all
    epochs so far, saved only from epoch max_epochs / 2 - 1 on.
    """

    def __init__(self, *args, no_validation: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if no_validation not in (None, SECOND_HALF_TRAIN_LOSS):
            raise ValueError(f"no_validation={no_validation!r}; choose null or {SECOND_HALF_TRAIN_LOSS!r}")
        self.no_validation = no_validation
        self.train_loss_rule = False
        self.lowest_loss = float("inf")

    def setup(self, trainer, pl_module, stage: str) -> None:
        splits = getattr(getattr(trainer, "datamodule", None), "splits", None)
        if self.no_validation and self.monitor and getattr(splits, "val_is_test", False):
            self.train_loss_rule = True
            self.monitor, self.mode = "train/epoch_loss", "min"
            self.kth_value, self.best_model_score = torch.tensor(float("inf")), None
            self._save_on_train_epoch_end = True
            log.info("no validation data: keeping the lowest-training-loss epoch of the second half")
        super().setup(trainer, pl_module, stage)

    def _save_topk_checkpoint(self, trainer, monitor_candidates: dict[str, Any]) -> None:
        if self.train_loss_rule:
            loss = float(monitor_candidates[self.monitor])
            lowest = loss < self.lowest_loss
            self.lowest_loss = min(loss, self.lowest_loss)
            if not lowest or trainer.current_epoch < trainer.max_epochs / 2 - 1:
                return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lowest_loss": self.lowest_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lowest_loss = state_dict.get("lowest_loss", float("inf"))
        self._load_moved(state_dict)

    def _load_moved(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if old_dir is None or self.dirpath is None or Path(old_dir) == Path(self.dirpath):
            return super().load_state_dict(state_dict)
        new_dir = Path(self.dirpath)

        def moved(path: str) -> str:
            if not path:
                return path
            target = new_dir / Path(path).name
            # the monitored (best) files move with the run; `last` is rewritten at the next epoch end
            if self.monitor is not None and Path(path).is_file() and not target.exists():
                new_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                log.info("resumed from another run dir: copied %s to %s", path, target)
            return str(target)

        state = dict(state_dict)
        state["dirpath"] = self.dirpath
        state["best_k_models"] = {moved(p): v for p, v in state_dict.get("best_k_models", {}).items()}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = moved(state_dict.get(key, ""))
        super().load_state_dict(state)
