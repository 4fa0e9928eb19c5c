"""Trace outputs written as trace.py writes them, for the readers' tests."""

from __future__ import annotations

import json


def write_selection(folder, components, size=None, effect=(1.0, 1.0)):
    """A selection.json as trace.py writes one (its schema: catlit.hooks.selection.Selection)."""
    from catlit.hooks.selection import Selection

    Selection(
        method="pgbct", rule="z >= 0.5", size=len(components) if size is None else size,
        effect={"train": effect[0], "heldout": effect[1]}, effect_kind="odds", model="m",
        components=components, z={}, restarts=[],
    ).write(folder / "selection.json")  # fmt: skip


def hydra_record(
    folder,
    seed: int,
    search: str = "default",
    overrides: tuple[str, ...] = (),
    config: bool = True,
    recorded: dict | None = None,
) -> None:
    """What trace.py leaves beside its results: config.yaml (unless `config` is false: the caller
    writes its own) and Hydra's .hydra/ record of the choices and overrides (and, given `recorded`,
    of the composed config: `{"search": {...}}`)."""
    (folder / ".hydra").mkdir()
    if recorded is not None:
        (folder / ".hydra" / "config.yaml").write_text(json.dumps(recorded))
    if config:
        (folder / "config.yaml").write_text(f"seed: {seed}\n")
    choices = {"hydra": {"runtime": {"choices": {"search": search, "pairs": "ioi", "model": "smollm2"}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(json.dumps(choices))  # JSON is YAML
    (folder / ".hydra" / "overrides.yaml").write_text(json.dumps([f"seed={seed}", *overrides]))
