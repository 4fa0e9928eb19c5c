"""Circuit files in MIB's graph format: the keys and names of MIB's own files, and MIB's node-level
top-n on a written file gives back the method's order."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from catlit.models.architectures import Layout
from catlit.tracing import mib_graph
from catlit.tracing.components import ComponentSpace
from tests.helpers.models import tiny_model

# The shape MIB's Graph.to_json writes (2 layers x 2 heads, d_model 4, node scores, neuron level),
# every edge written out by hand from MIB's construction order.
EXAMPLE = Path(__file__).parent / "fixtures" / "mib_graph_2x2.json"


def mib_node_topn(data: dict, n: int) -> set[str]:
    """MIB's apply_topn(level='node', absolute=True): the n best scored nodes, plus every unscored one."""
    scored = {k: v["score"] for k, v in data["nodes"].items() if "score" in v and not math.isnan(v["score"])}
    best = sorted(scored, key=lambda k: abs(scored[k]), reverse=True)[:n]
    unscored = {k for k, v in data["nodes"].items() if k not in scored}
    return set(best) | unscored


def scored_in_graph(data: dict) -> set[str]:
    return {
        k for k, v in data["nodes"].items() if v["in_graph"] and "score" in v and not math.isnan(v["score"])
    }


def test_a_catlit_file_has_the_keys_and_names_of_mibs_own():
    example = json.loads(EXAMPLE.read_text())
    model = tiny_model("llama", layers=2, heads=2, width=4, kv_heads=1)
    space = ComponentSpace(Layout(model), ["heads", "mlp"])
    order = list(range(space.numel))[::-1]
    data = mib_graph.graph(space, order, in_graph=order[:3], edges=True)
    assert data["cfg"] == example["cfg"]
    assert list(data["nodes"]) == list(example["nodes"])  # MIB's forward order
    for name, entry in example["nodes"].items():
        assert list(data["nodes"][name]) == list(entry), name  # the same fields, in MIB's order
        if "neurons" in entry:
            assert len(data["nodes"][name]["neurons"]) == len(entry["neurons"]) == 4
    assert list(data["edges"]) == list(example["edges"])  # every name, in MIB's order
    assert all(set(e) == {"score", "in_graph"} for e in data["edges"].values())
    # mlp output dimensions are neurons of m{L}: the first 3 of the order are m1's dims 3, 2, 1
    assert data["nodes"]["m1"]["neurons"] == [False, True, True, True]
    assert data["nodes"]["m0"]["neurons"] == [False] * 4 and not data["nodes"]["m0"]["in_graph"]
    assert math.isnan(data["nodes"]["m1"]["score"])  # scored at the neuron level only
    assert not any(data["nodes"][f"a{layer}.h{h}"]["in_graph"] for layer in (0, 1) for h in (0, 1))
    assert data["edges"]["input->m1"]["in_graph"] and not data["edges"]["input->a0.h0<q>"]["in_graph"]


@pytest.mark.parametrize(("layers", "heads"), [(2, 2), (30, 9)])
def test_edges_connect_mibs_forward_and_backward_nodes(layers, heads):
    edges = mib_graph.edge_names(layers, heads, parallel=False)
    parents = {p for _, p, _ in edges}
    slots = {name.split("->")[1] for name, _, _ in edges}  # a head's q, k, v inputs are three slots
    assert len(parents) == 1 + layers * (heads + 1)  # MIB's n_forward
    assert len(slots) == layers * (3 * heads + 1) + 1  # MIB's n_backward
    assert len({name for name, _, _ in edges}) == len(edges)
    parallel = mib_graph.edge_names(layers, heads, parallel=True)
    assert len(edges) - len(parallel) == layers * heads  # a parallel MLP does not read its layer's heads


def test_parallel_attention_and_mlp_come_from_the_config():
    config = GPTNeoXConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50
    )
    assert Layout(AutoModelForCausalLM.from_config(config)).parallel
    config.use_parallel_residual = False
    assert not Layout(AutoModelForCausalLM.from_config(config)).parallel
    assert not Layout(tiny_model("llama")).parallel


def test_mibs_node_topn_on_a_written_file_is_the_methods_order(tmp_path):
    model = tiny_model("llama", layers=2, heads=4, width=16)
    space = ComponentSpace(Layout(model), ["heads", "mlp_blocks"])
    order = [5, 9, 0, 3, 8, 1, 2, 4, 6, 7]  # 8 heads, then 2 MLP blocks (flat indices 8, 9)
    path = tmp_path / "mib" / "topk.json"
    mib_graph.write(path, space, order, order[:2], {"method": "topk"})
    data = json.loads(path.read_text())
    assert data["catlit"]["level"] == "node" and data["catlit"]["method"] == "topk"
    assert data["catlit"]["left_out"] == [] and data["edges"] == {}
    assert scored_in_graph(data) == {"a1.h1", "m1"}
    names = [space.name(i) for i in order]
    as_mib = {"L1H1": "a1.h1", "L1.mlp": "m1", "L0H0": "a0.h0", "L0H3": "a0.h3", "L0.mlp": "m0"}
    for n in (1, 3, 5):
        expected = {as_mib.get(c, c) for c in names[:n]} | {"input", "logits"}
        assert mib_node_topn(data, n) == expected


def test_kinds_mib_has_no_node_for_are_named_not_hidden(tmp_path):
    space = ComponentSpace(Layout(tiny_model("llama")), ["heads", "neurons", "attn_blocks"])
    path = tmp_path / "pgbct.json"
    mib_graph.write(path, space, list(range(space.numel)), [0], {"method": "pgbct"})
    data = json.loads(path.read_text())
    assert data["catlit"]["left_out"] == ["neurons", "attn_blocks"]
    assert scored_in_graph(data) == {"a0.h0"}
