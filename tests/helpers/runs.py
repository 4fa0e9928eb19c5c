"""Running catlit the way its users do, from tests: the real `conf/` tree composed by Hydra, the real
recipes, small data and one epoch."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from catlit.cli import config_dir

ROOT = Path(__file__).resolve().parents[2]

FAST = [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]
SMALL_DATA = [
    "+data.params.n_train=64",
    "+data.params.n_val=16",
    "+data.params.n_iid=16",
    "+data.params.n_ood=16",
]


def compose_cfg(tmp_path: Path, overrides: list[str] | None = None, config_name: str = "train"):
    """Compose conf/<config_name>.yaml exactly as train.py (trace.py) does, the run dir under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # train.py's task function never sees this section either
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path / "logs")
    GlobalHydra.instance().clear()
    return cfg


def train(tmp_path: Path, *overrides: str, small: bool = True):
    """One training run through the real recipe: (cfg, returned value, metrics, run dir)."""
    from catlit.training.run import run

    cfg = compose_cfg(tmp_path, [*FAST, *(SMALL_DATA if small else []), *overrides])
    value, metrics = run(cfg)
    return cfg, value, metrics, Path(cfg.paths.output_dir)


def logged_columns(run_dir: Path) -> set[str]:
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with metrics_csv.open() as handle:
        return set(next(csv.reader(handle)))
