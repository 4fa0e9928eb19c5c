"""Which layers and heads the Re-Attention loss looks at.

layers: "all" | "last:K" | [i, j, ...] (negative indices count from the end)
heads:  "all" | [h, ...] (the same heads in every selected layer) | {layer: [h, ...]} (others: all)
A selection averages, per layer, over its heads, then over the layers: with "all" / "all" this is the
mean over every layer and head, the paper's objective.

`Selection` is the schema of a trace's `selection.json`: `trace.py` writes it, and every reader
(`read_head_selection` for `method.heads_from`, `catlit-trace-curve`) reads it through the same class,
which names the file and the field that does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from catlit.files import write_json


@dataclass
class Selection:
    """One trace's chosen set (selection.json)."""

    method: str  # the method that chose it ("pgbct")
    rule: str  # how: "z >= 0.5" | "top 5 of z"
    size: int
    effect: dict  # {"train": float, "heldout": float}: the set's mean effect on each split
    effect_kind: str  # the pairs' effect (odds, prob_drop, logit_diff)
    model: str  # the traced checkpoint
    components: list  # [{name, kind, layer, index, hook, z}], best first
    z: dict  # {component kind: [[z per component] per layer]}
    restarts: list  # [{objective, size}] per start of the search

    COMPONENT_KEYS: ClassVar[tuple] = ("name", "kind", "layer", "index")

    def write(self, path: Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def read(cls, path: Path) -> Selection:
        """selection.json, checked against the schema: a ValueError names the file and the field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); run trace.py again") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a selection (a JSON object is expected); run trace.py again")
        types = {"method": str, "rule": str, "size": int, "effect": dict, "effect_kind": str,
                 "model": str, "components": list, "z": dict, "restarts": list}  # fmt: skip
        for f in fields(cls):
            if f.name not in data:
                raise ValueError(f"{path}: field {f.name!r} is missing; run trace.py again")
            if not isinstance(data[f.name], types[f.name]):
                raise ValueError(
                    f"{path}: field {f.name!r} is {type(data[f.name]).__name__}, not {types[f.name].__name__}"
                )
        for i, comp in enumerate(data["components"]):
            missing = [k for k in cls.COMPONENT_KEYS if not isinstance(comp, dict) or k not in comp]
            if missing:
                raise ValueError(f"{path}: components[{i}] lacks {missing}; run trace.py again")
        if data["size"] != len(data["components"]):
            raise ValueError(f"{path}: size {data['size']} but {len(data['components'])} components")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


class LayerHeadSelection:
    def __init__(self, layers="all", heads="all"):
        self.layers_spec, self.heads_spec = layers, heads

    def layers(self, n_layers: int) -> list[int]:
        spec = self.layers_spec
        if spec in (None, "all"):
            return list(range(n_layers))
        if isinstance(spec, str) and spec.startswith("last:"):
            k = int(spec.removeprefix("last:"))
            if not 1 <= k <= n_layers:
                raise ValueError(f"method.layers={spec!r}: the model has {n_layers} layers")
            return list(range(n_layers - k, n_layers))
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            out = sorted({int(i) % n_layers for i in spec if -n_layers <= int(i) < n_layers})
            if len(out) != len(set(spec)) or not out:
                raise ValueError(f"method.layers={list(spec)}: indices must lie in [-{n_layers}, {n_layers})")
            return out
        raise ValueError(f"method.layers must be 'all', 'last:K' or a list of indices, got {spec!r}")

    def heads(self, layer: int, n_heads: int) -> list[int] | None:
        """Head indices for `layer`, or None for all of them."""
        spec = self.heads_spec
        if isinstance(spec, Mapping):
            spec = {int(k): v for k, v in spec.items()}.get(layer, "all")
        if spec in (None, "all"):
            return None
        heads = sorted({int(h) for h in spec})
        if not heads or heads[0] < 0 or heads[-1] >= n_heads:
            raise ValueError(f"method.heads for layer {layer}: {list(spec)} not within [0, {n_heads})")
        return heads

    @property
    def is_everything(self) -> bool:
        return self.layers_spec in (None, "all") and self.heads_spec in (None, "all")


def read_head_selection(path: str | Path) -> dict[int, list[int]]:
    """{layer: [heads]} of the attention heads in a trace's selection.json (or its run directory)."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "selection.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"method.heads_from={str(path)!r}: no selection.json there (run trace.py first)"
        )
    if not (file.parent / "metrics.json").is_file():  # a trace writes metrics.json last, when complete
        raise ValueError(
            f"method.heads_from={str(path)!r}: that trace did not finish (no metrics.json beside "
            "selection.json); run trace.py again"
        )

    try:
        selection = Selection.read(file)
    except ValueError as err:
        raise ValueError(f"method.heads_from: {err}") from None
    heads: dict[int, list[int]] = {}
    for comp in selection.components:
        if comp["kind"] == "heads":
            heads.setdefault(int(comp["layer"]), []).append(int(comp["index"]))
    if not heads:
        raise ValueError(f"{file}: the selection holds no attention heads (trace with components=[heads])")
    return {layer: sorted(h) for layer, h in sorted(heads.items())}
