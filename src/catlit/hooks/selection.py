"""Which layers and heads the Re-Attention loss looks at.

layers: "all" | "last:K" | [i, j, ...] (negative indices count from the end)
heads:  "all" | [h, ...] (the same heads in every selected layer) | {layer: [h, ...]} (others: all)
A selection averages, per layer, over its heads, then over the layers: with "all" / "all" this is the
mean over every layer and head, the paper's objective.

`read_head_selection` reads the heads of a trace's `selection.json` (written by `trace.py`) as such a
{layer: [heads]} selection, for `method.heads_from`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


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
        data = json.loads(file.read_text())
        heads: dict[int, list[int]] = {}
        for comp in data.get("components", []):
            if comp.get("kind") == "heads":
                heads.setdefault(int(comp["layer"]), []).append(int(comp["index"]))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"method.heads_from: {file} is damaged ({type(err).__name__}: {err}); run trace.py again"
        ) from None
    if not heads:
        raise ValueError(f"{file}: the selection holds no attention heads (trace with components=[heads])")
    return {layer: sorted(h) for layer, h in sorted(heads.items())}
