"""Config values checked before anything runs: values that would fail late or silently do harm. The
method's own keys come from the rules its class declares (`Capabilities.config_rules`)."""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from catlit.errors import ConfigError, check_rules, integer, number

# key -> (test, what it must be); a missing key is left to its own default
RULES = {
    "seed": (integer(), "an integer"),
    "trainer.max_epochs": (integer(lambda v: v >= 1), "an integer >= 1"),
    "optimizer.lr": (number(lambda v: v > 0), "a number > 0"),
}


def method_rules(cfg: DictConfig) -> dict:
    target = OmegaConf.select(cfg, "method._target_")
    if not target:
        return {}
    try:
        cls = get_class(target)
    except Exception as err:  # an unknown target is named, whatever Hydra raised
        raise ConfigError(f"method._target_={target!r} cannot be imported: {err}") from None
    rules = getattr(getattr(cls, "capabilities", None), "config_rules", {}) or {}
    return {f"method.{key}": rule for key, rule in rules.items()}


def check_config(cfg: DictConfig) -> None:
    check_rules(cfg, {**RULES, **method_rules(cfg)})
