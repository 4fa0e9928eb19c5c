"""Every tracing method's ranking as a circuit file in MIB's graph format (the circuit track's JSON).

MIB (the Mechanistic Interpretability Benchmark) reads a circuit as

  {"cfg":   {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"},
   "nodes": {name: {"in_graph": bool, "score"?: float, "neurons"?: [bool] * d_model,
                    "neurons_scores"?: [float] * d_model}},
   "edges": {"parent->child" or "parent->a{L}.h{H}<q|k|v>": {"score": float, "in_graph": bool}}}

with nodes `input`, `a{L}.h{H}` (a head's output), `m{L}` (an MLP's output) and `logits`. catlit's
methods rank components, so a file is written at the node level (head ranks on `a{L}.h{H}`,
`mlp_blocks` ranks on `m{L}`) and, for `mlp` (the MLP's output dimensions, MIB's neurons of `m{L}`),
at the neuron level. A score is the method's rank turned into a number (N - position in its order:
MIB's top-n by score is the method's own order); `in_graph` marks the set the method chose itself,
else its first `size` components. MIB's conventions for what was not traced: a node or neuron whose
score is NaN is unscored and stays in every circuit (catlit leaves it clean too). Edges are written on
request only (about 123,000 on a 30-layer, 9-head model); MIB's loader accepts a node-level file
without them and its node-level top-n rebuilds them from the nodes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from catlit.tracing.components import ComponentSpace

# catlit kinds MIB has a node or neuron for; `neurons` (MLP hidden units) and `attn_blocks` (a whole
# attention layer) have no MIB counterpart and are left out of the file, said in its "catlit" entry.
MIB_KINDS = ("heads", "mlp", "mlp_blocks")


def node_names(n_layers: int, n_heads: int) -> list[str]:
    """MIB's nodes in its forward order: input, then per layer the heads and the MLP, then logits."""
    names = ["input"]
    for layer in range(n_layers):
        names += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return [*names, "logits"]


def edge_names(n_layers: int, n_heads: int, parallel: bool) -> list[tuple[str, str, str]]:
    """(edge name, parent, child) in MIB's order: every earlier node writes into each head's q, k and
    v inputs, the MLP (which also reads its own layer's heads unless attention and MLP run in
    parallel) and the logits."""
    edges, stream = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        for parent in stream:
            for head in heads:
                edges += [(f"{parent}->{head}<{x}>", parent, head) for x in "qkv"]
            if parallel:
                edges.append((f"{parent}->m{layer}", parent, f"m{layer}"))
        if not parallel:
            edges += [(f"{p}->m{layer}", p, f"m{layer}") for p in [*stream, *heads]]
        stream += [*heads, f"m{layer}"]
    return edges + [(f"{p}->logits", p, "logits") for p in stream]


def graph(space: ComponentSpace, order: list[int], in_graph: list[int], edges: bool = False) -> dict:
    """One ranking (flat component indices, best first) as MIB's graph dict."""
    layout = space.layout
    n = len(order)
    score = {index: float(n - position) for position, index in enumerate(order)}
    chosen = set(in_graph)
    names = node_names(layout.n_layers, layout.n_heads)
    nodes: dict[str, dict] = {name: {"in_graph": True, "score": math.nan} for name in names[:-1]}
    nodes["logits"] = {"in_graph": True}  # MIB's logits node: always in, never scored
    neuron_level = any(g.kind == "mlp" for g in space.groups)
    if neuron_level:  # every node then carries its d_model output dimensions (MIB prunes a node with none)
        for entry in nodes.values():
            entry["neurons"] = [True] * layout.d_model
            entry["neurons_scores"] = [math.nan] * layout.d_model
    for flat in range(space.numel):
        group, layer, i = space.locate(flat)
        if group.kind in ("heads", "mlp_blocks"):
            node = f"a{layer}.h{i}" if group.kind == "heads" else f"m{layer}"
            nodes[node].update(score=score[flat], in_graph=flat in chosen)
        elif group.kind == "mlp":  # output dimensions: MIB's neurons of m{L}
            nodes[f"m{layer}"]["neurons"][i] = flat in chosen
            nodes[f"m{layer}"]["neurons_scores"][i] = score[flat]
    if neuron_level:  # an MLP none of whose dimensions is chosen is out of the circuit
        for layer in range(layout.n_layers):
            entry = nodes[f"m{layer}"]
            entry["in_graph"] = entry["in_graph"] and any(entry["neurons"])
    out = {
        "cfg": {
            "n_layers": layout.n_layers,
            "n_heads": layout.n_heads,
            "parallel_attn_mlp": layout.parallel,
            "d_model": layout.d_model,
        },
        "nodes": nodes,
        "edges": {},
    }
    if edges:  # node-level: unscored (0), in the circuit where both ends are
        for name, parent, child in edge_names(layout.n_layers, layout.n_heads, layout.parallel):
            both = nodes[parent]["in_graph"] and nodes[child]["in_graph"]
            out["edges"][name] = {"score": 0.0, "in_graph": both}
    return out


def write(path: Path, space: ComponentSpace, order, in_graph, about: dict, edges: bool = False) -> None:
    """`graph(...)` plus a "catlit" entry saying what the scores are (MIB's loader ignores it)."""
    data = graph(space, order, in_graph, edges)
    kinds = [g.kind for g in space.groups]
    data["catlit"] = {
        **about,
        "level": "neuron" if "mlp" in kinds else "node",
        "score": "rank: N - position in the method's order (N components)",
        "in_graph": f"the {len(in_graph)} components the method chose (or its first {len(in_graph)})",
        "head_mode": space.head_mode if "heads" in kinds else None,
        "left_out": [k for k in kinds if k not in MIB_KINDS],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
