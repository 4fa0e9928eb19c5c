"""The real conf/ tree: every group option composes; bad overrides fail with Hydra's clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from catlit.cli import config_dir
from tests.helpers.runs import compose_cfg

CONF = Path(config_dir())
GROUPS = ["model", "data", "method", "trainer", "logger", "callbacks", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group == "model" and option != "tiny":
        overrides.append("model.path=/some/local/folder")
    tracing = group == "experiment" and option.startswith("trace_")  # trace.py's studies
    cfg = compose_cfg(tmp_path, overrides, config_name="trace" if tracing else "train")
    if group == "experiment":  # experiments are global packages: they rename the run
        assert cfg.task_name == option
    else:
        assert cfg[group] is not None
    if group == "trainer" and option in ("cpu", "ddp"):
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
        assert trainer.max_epochs == cfg.trainer.max_epochs


def test_defaults_are_cat_on_stg_toy_with_offline_wandb(tmp_path):
    cfg = compose_cfg(tmp_path)
    assert cfg.method.name == "cat_share" and cfg.data.preset == "toy" and cfg.model.path is None
    assert cfg.logger.wandb.offline is True
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric == "val/iid/acc"


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_cfg(tmp_path, ["method.no_such_key=1"])


def test_unknown_group_option_is_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="no_such_model"):
        compose_cfg(tmp_path, ["model=no_such_model"])


def test_pretrained_model_requires_a_path(tmp_path):
    cfg = compose_cfg(tmp_path, ["model=pretrained"])
    with pytest.raises(MissingMandatoryValue, match="path"):
        _ = cfg.model.path


def test_unknown_stg_preset_and_param_are_named(tmp_path):
    cfg = compose_cfg(tmp_path, ["data.preset=nope"])
    with pytest.raises(InstantiationException, match="nope.* is not an STG preset"):
        instantiate(cfg.data)
    cfg = compose_cfg(tmp_path, ["+data.params.n_causl=3"])
    with pytest.raises(InstantiationException, match=r"unknown parameter\(s\) \['n_causl'\]"):
        instantiate(cfg.data)


def test_wandb_group_is_the_task_outside_a_sweep(tmp_path):
    cfg = compose_cfg(tmp_path, ["task_name=mytask"])
    assert cfg.logger.wandb.group == "mytask"
