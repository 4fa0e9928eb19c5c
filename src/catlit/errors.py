"""Errors that are the user's to fix: each names what to change; the entry points print them in one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""
