"""Trace outputs written as trace.py writes them, for the readers' tests."""

from __future__ import annotations


def write_selection(folder, components, size=None, effect=(1.0, 1.0)):
    """A selection.json as trace.py writes one (its schema: catlit.hooks.selection.Selection)."""
    from catlit.hooks.selection import Selection

    Selection(
        method="pgbct", rule="z >= 0.5", size=len(components) if size is None else size,
        effect={"train": effect[0], "heldout": effect[1]}, effect_kind="odds", model="m",
        components=components, z={}, restarts=[],
    ).write(folder / "selection.json")  # fmt: skip
