"""Errors that are the user's to fix: each names what to change; the entry points print them in one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class WriteFailed(OSError):
    """A file could not be written (a full disk, a quota): the message names it and what to do."""


def check_rules(cfg, rules: dict) -> None:
    """`rules`: {dotted key: (test, what it must be)}; the first value that fails is a ConfigError
    naming the key and the value. A key the config lacks is left to its default."""
    from omegaconf import OmegaConf

    for key, (ok, what) in rules.items():
        value = OmegaConf.select(cfg, key, default="__missing__", throw_on_missing=False)
        if isinstance(value, str) and value == "__missing__":
            continue
        if not ok(value):
            raise ConfigError(f"{key}={value!r}: must be {what}")


def check_values(values: dict, rules: dict, prefix: str = "") -> None:
    """`check_rules` on plain values (a constructor's arguments): the same rules, the same message."""
    for key, (ok, what) in rules.items():
        if key in values and not ok(values[key]):
            raise ConfigError(f"{prefix}{key}={values[key]!r}: must be {what}")


def one_of(options):
    """A rule: (test, what) for a value that must be one of `options`."""
    options = tuple(options)
    return (lambda v: v in options, f"one of {', '.join(map(str, options))}")


def integer(test=lambda v: True):
    """A rule's test: an int (not a bool) that passes `test`."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and test(v)


def number(test=lambda v: True):
    """A rule's test: a finite real number (not a bool) that passes `test`."""
    import math
    from numbers import Real

    return lambda v: isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and test(v)
