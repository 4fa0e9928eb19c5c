"""Checkpoints that survive a move: resuming into a new run dir keeps the best score and its file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that, resumed from another directory, carries its state over.

    Lightning's ModelCheckpoint forgets `best_model_score` when the checkpoint was written under another
    dirpath, so a run resumed into a new run dir would call its first epoch "best" even when an earlier
    epoch scored higher. Here the best checkpoint file is copied into the new directory and the scores
    are kept, so the new run dir is self-contained and selects exactly as an uninterrupted run would.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
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
