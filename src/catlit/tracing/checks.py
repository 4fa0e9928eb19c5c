"""trace.py's settings, checked before anything runs (the search's and the baselines' by their
settings classes, `catlit.tracing.settings`) (one error naming the key), and those that
depend on the model (set sizes against its number of components) once it is loaded."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from catlit.errors import ConfigError, check_rules, integer, number
from catlit.tracing.measures import GRIDS, INTERVENTIONS
from catlit.tracing.settings import BaselineSettings, SearchSettings

RULES = {
    "seed": (integer(), "an integer"),
    "select.threshold": (number(lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    "select.k": (lambda v: v is None or integer(lambda k: k >= 1)(v), "null or an integer >= 1"),
    "heldout_fraction": (number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "noise_scale": (number(lambda v: v >= 0), "a finite number >= 0"),
    "noise_std": (lambda v: v is None or number(lambda k: k >= 0)(v), "null or a finite number >= 0"),
    "measures.points": (integer(lambda v: v >= 0), "an integer >= 0"),
    "measures.split": (lambda v: v in ("heldout", "train"), "heldout or train"),
    "measures.grid": (lambda v: v in GRIDS, "mib (MIB's fractions, CPR and CMD) or log"),
    "measures.intervention": (lambda v: v in INTERVENTIONS, "catlit or mib"),
    "intervention": (lambda v: v in INTERVENTIONS, "catlit or mib"),
    "pairs.limit": (lambda v: v is None or integer(lambda k: k >= 2)(v), "null or an integer >= 2"),
}


def check_trace_config(cfg: DictConfig) -> None:
    check_rules(cfg, RULES)
    # MIB's faithfulness is linear in its metric, and it runs the clean input against a corrupted one
    mib = cfg.measures.get("intervention", "catlit") == "mib" and int(cfg.measures.points) > 0
    if mib and (cfg.pairs.effect != "logit_diff" or cfg.pairs.source != "counterfactual"):
        raise ConfigError(
            "measures.intervention=mib needs pairs.effect=logit_diff and pairs.source=counterfactual "
            f"(got {cfg.pairs.effect}, {cfg.pairs.source}): MIB's faithfulness is a ratio of "
            "mean metric differences between a clean and a corrupted input"
        )
    if cfg.get("intervention", "catlit") == "mib" and cfg.pairs.source != "counterfactual":
        raise ConfigError(
            f"intervention=mib needs pairs.source=counterfactual (got {cfg.pairs.source}): MIB's circuit "
            "runs one input with everything outside it fixed at the other input's values"
        )
    SearchSettings.from_config(cfg.search)  # the search's and the baselines' own rules
    BaselineSettings.from_config(cfg.baselines)


def check_sizes(cfg: DictConfig, numel: int) -> None:
    """Set sizes against the number of components the model has."""
    k = cfg.select.k
    if k is not None and k > numel:
        raise ConfigError(f"select.k={k}: the model has {numel} components of kinds {list(cfg.components)}")
    sizes = list(cfg.baselines.sizes or [])
    if sizes and not any(0 < s <= numel for s in sizes):
        raise ConfigError(f"baselines.sizes={sizes}: none is within [1, {numel}], the number of components")


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what} is {value}: the model's outputs on the pairs are not finite (a NaN or inf in its "
            "weights, or an effect that overflows); tracing stops rather than report it"
        )
    return value
