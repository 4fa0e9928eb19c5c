"""OmegaConf resolvers used by conf/ (registered when catlit.cli is imported)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def sweep_group(task_name: str) -> str:
    """wandb group: one per sweep (`<task>-<sweep dir name>`), the task name for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return f"{task_name}-{Path(HydraConfig.get().sweep.dir).name}"
    except ImportError:  # pragma: no cover
        pass
    return task_name


def register() -> None:
    if not OmegaConf.has_resolver("catlit.sweep_group"):
        OmegaConf.register_new_resolver("catlit.sweep_group", sweep_group)


register()
