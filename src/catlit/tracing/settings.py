"""Typed settings of a trace: PGB-CT's search (the `search` config group) and the baselines (trace.yaml's
`baselines` section). Their values live in one place, the YAML (conf/search/default.yaml,
conf/trace.yaml): the classes have no defaults, `preset()` reads the YAML, and `from_config` checks
every value once, naming the key. The code that runs a search or a baseline takes these objects, so
no function carries a default of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from catlit.errors import ConfigError, check_values, integer, number, one_of
from catlit.tracing.effects import LOSSES

SCHEDULES = ("constant", "linear", "exp", "poly")  # of the penalties over epochs (catlit.tracing.search)
_COUNT = (integer(lambda v: v >= 1), "an integer >= 1")
_OPT_COUNT = (lambda v: v is None or integer(lambda k: k >= 1)(v), "null or an integer >= 1")
_NONNEGATIVE = (number(lambda v: v >= 0), "a finite number >= 0")


def _conf_dir() -> Path:
    from catlit.configs import config_dir

    return Path(config_dir())


def _yaml(file: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(file))


class _Settings:
    RULES: ClassVar[dict] = {}
    SECTION: ClassVar[str] = ""

    @classmethod
    def from_config(cls, values: Mapping):
        """The settings from a config section (a DictConfig or a dict); every field must be there."""
        from omegaconf import DictConfig, OmegaConf

        if isinstance(values, DictConfig):
            values = OmegaConf.to_container(values, resolve=True)
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"{cls.SECTION}: unknown setting(s) {unknown}; the settings are {names}")
        missing = [n for n in names if n not in values]
        if missing:
            raise ConfigError(f"{cls.SECTION}: missing setting(s) {missing}")
        check_values(values, cls.RULES, prefix=f"{cls.SECTION}.")
        settings = cls(**{n: values[n] for n in names})
        settings.check()
        return settings

    def check(self) -> None:
        """Checks beyond one value's rule."""

    def replace(self, **changes):
        """A copy with `changes`, checked as `from_config` checks."""
        return type(self).from_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchSettings(_Settings):
    """PGB-CT's optimisation: Adam on z (one rate per component kind), L1 + z(1-z) penalties."""

    epochs: int
    batch_size: int  # pairs per optimiser step
    chunk: int | None  # pairs per forward/backward (gradient accumulation; null: the whole batch)
    lr: dict  # {component kind: Adam rate}
    lambda1: float  # L1: sum |z|
    lambda2: float  # binarisation: sum z(1-z)
    schedule: str  # of both lambdas over epochs
    loss: str  # effect loss: one of catlit.tracing.effects.LOSSES
    init: float  # z at the start
    restarts: int  # > 1: knock-out, then random starts; the best kept

    SECTION: ClassVar[str] = "search"
    RULES: ClassVar[dict] = {
        "epochs": _COUNT,
        "batch_size": _COUNT,
        "chunk": _OPT_COUNT,
        "lambda1": _NONNEGATIVE,
        "lambda2": _NONNEGATIVE,
        "schedule": one_of(SCHEDULES),
        "loss": one_of(LOSSES),
        "init": (number(lambda v: 0 <= v <= 1), "a number in [0, 1]"),
        "restarts": _COUNT,
    }

    @classmethod
    def preset(cls, name: str = "default", **changes) -> SearchSettings:
        """conf/search/<name>.yaml, with `changes`."""
        file = _conf_dir() / "search" / f"{name}.yaml"
        if not file.is_file():
            raise ConfigError(f"search={name}: no {file}")
        return cls.from_config({**_yaml(file), **changes})

    def check(self) -> None:
        if not isinstance(self.lr, Mapping):
            raise ConfigError(
                f"search.lr={self.lr!r}: must be a rate per component kind, e.g. {{heads: 0.1, mlp: 0.5}}"
            )
        for kind, rate in self.lr.items():
            # Adam moves z by about lr a step and z lives in [0, 1]: a step past 10 is a typo, not a setting
            if not number(lambda v: 0 < v <= 10)(rate):
                raise ConfigError(f"search.lr.{kind}={rate!r}: must be a number in (0, 10]")

    def rate(self, kind: str) -> float:
        if kind not in self.lr:
            raise ConfigError(f"search.lr has no rate for {kind} components: set search.lr.{kind}")
        return float(self.lr[kind])

    @property
    def passes(self) -> int:
        """Epochs over the pairs, every restart counted."""
        return self.epochs * self.restarts


@dataclass(frozen=True)
class BaselineSettings(_Settings):
    """What the baselines compare and their own knobs (the method names are checked against the
    registry, `catlit.tracing.baselines.BASELINES`, by the trace that runs them)."""

    methods: list  # the baselines run beside PGB-CT
    sizes: list  # set sizes compared (PGB-CT's own size is always added)
    random_draws: int  # random: orders averaged
    eval_pairs: int | None  # score selections on at most this many training pairs (null: all)
    steps: int  # atp_ig: integration steps
    tau: float  # greedy_backward: drop a component while the effect falls by < tau x |all|

    SECTION: ClassVar[str] = "baselines"
    RULES: ClassVar[dict] = dict(random_draws=_COUNT, steps=_COUNT, tau=_NONNEGATIVE, eval_pairs=_OPT_COUNT)

    @classmethod
    def preset(cls, **changes) -> BaselineSettings:
        """trace.yaml's `baselines` section, with `changes`."""
        return cls.from_config({**_yaml(_conf_dir() / "trace.yaml")["baselines"], **changes})
