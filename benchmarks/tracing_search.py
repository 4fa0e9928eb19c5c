"""PGB-CT vs greedy forward selection on a 12-layer x 12-head random model with a planted circuit.

`python benchmarks/tracing_search.py` builds a random Llama (12 layers, 12 heads: 144 heads), plants a
circuit (a few heads' output slices scaled up; every other head keeps its random, weaker path),
traces counterfactual pairs that change one early token, and prints, at set sizes 5 / 10 / 20 / 40,
the hard-mask effect of each method's first k heads, scored by the same evaluator: PGB-CT under
several settings (one search each; its top-k of z for every k), AtP, AtP-IG and greedy forward
selection, then each method's time (greedy's to reach each size). `--memory` adds
the peak memory of one PGB-CT step in head-output vs attention-pattern mode (each in a fresh process;
the rise of peak RSS over the RSS after the model is built), showing that head-output mode never
materialises attention maps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from catlit.models.architectures import Layout  # noqa: E402
from catlit.tracing import baselines as bl  # noqa: E402
from catlit.tracing.components import ComponentSpace  # noqa: E402
from catlit.tracing.engine import Tracer  # noqa: E402
from catlit.tracing.pairs import EncodedPair  # noqa: E402
from catlit.tracing.planted import orient, plant_heads  # noqa: E402
from catlit.tracing.search import pgbct  # noqa: E402

VOCAB = 64
PLANTED = {(1, 3), (2, 7), (4, 0), (6, 11), (8, 5), (10, 2)}


def build(layers: int, heads: int, width: int, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    model.set_attn_implementation("sdpa")
    planted = {(layer % layers, head % heads) for layer, head in PLANTED}
    plant_heads(model, planted, scale=8.0, readout=10.0, others=1.0)
    return model, planted


def pairs(n: int, length: int, seed: int = 0) -> list[EncodedPair]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        base = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        source = list(base)
        source[2] = 3 + (base[2] - 3 + 1 + i) % (VOCAB - 3)
        out.append(
            EncodedPair(
                [base], [source], [length], [(0, length - 1, 7, 0), (0, length - 1, 9, 1)], [[]], f"p{i}"
            )
        )
    return out


SEARCHES = {  # PGB-CT settings: conf/search/default.yaml, ranking.yaml, paper.yaml and two others
    "default (pooled, constant λ=0.05)": dict(loss="pooled", schedule="constant", lambda1=0.05, lambda2=0.05),
    "scaled, constant λ=0.05": dict(loss="scaled", schedule="constant", lambda1=0.05, lambda2=0.05),
    "inverse, constant λ=0.05": dict(loss="inverse", schedule="constant", lambda1=0.05, lambda2=0.05),
    "inverse, linear λ=0.05": dict(loss="inverse", schedule="linear", lambda1=0.05, lambda2=0.05),
    "negative, constant λ=0.002": dict(loss="negative", schedule="constant", lambda1=0.002, lambda2=0.002),
    "ranking (relative, constant λ=5e-4)": dict(
        loss="relative", schedule="constant", lambda1=5e-4, lambda2=5e-4
    ),
    "paper (inverse, linear λ=1e-4)": dict(loss="inverse", schedule="linear", lambda1=1e-4, lambda2=1e-4),
}


def compare(
    layers: int, heads: int, width: int, sizes: list[int], n_pairs: int, length: int, epochs: int, greedy=True
):
    """Effect of every method's first k heads at each size; (rows, notes, all-heads effect, times)."""
    model, planted = build(layers, heads, width)
    space = ComponentSpace(Layout(model), "heads")
    tracer = Tracer(model, space, pairs(n_pairs, length), pad_id=0, batch_size=8)
    orient(tracer)
    indices = list(range(n_pairs))
    prepared = tracer.prepare(indices)
    planted_idx = {layer * heads + head for layer, head in planted}
    orders, times, notes = {}, {}, []
    for name, settings in SEARCHES.items():
        result = pgbct(tracer, indices, epochs=epochs, **settings)
        found = set(result.threshold(0.5))
        hit = len(found & planted_idx)
        notes.append(f"{name}: threshold set {len(found)} heads, {hit} of {len(planted_idx)} planted")
        orders[f"PGB-CT {name}"], times[f"PGB-CT {name}"] = result.ranking(), result.wall_s
    ctx = bl.Context(tracer, prepared, lambda s: (0.0, 0.0), options=bl.BaselineSettings.preset(steps=5))
    for name in ("atp", "atp_ig"):
        ranking = bl.BASELINES[name](ctx)
        orders[name], times[name] = ranking.order, ranking.wall_s
    greedy_times = [float("nan")] * max(sizes)
    if greedy:
        orders["greedy"], _, greedy_times = bl.greedy_order(tracer, prepared, max(sizes))
    rows = []
    for k in sizes:
        row = {"size": k}
        for name, ranked in orders.items():
            row[name] = tracer.evaluate(space.from_indices(ranked[:k]), prepared)
        row["greedy time"] = greedy_times[k - 1]
        rows.append(row)
    return rows, notes, tracer.evaluate(space.full(1.0), prepared), times


def memory_worker(mode: str, t: int, batch: int) -> dict:
    model, _ = build(12, 12, 192)
    space = ComponentSpace(Layout(model), "heads", mode)
    tracer = Tracer(model, space, pairs(batch, t), pad_id=0, batch_size=batch, positions="all")
    b = tracer.batch(list(range(batch)))
    cache = tracer.source_cache(b)
    tracer.base_scores(b)
    base = _rss()
    z = space.full(0.5, requires_grad=True)
    started = time.perf_counter()
    loss, _ = tracer.loss(b, z, cache)
    loss.backward()
    step = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"mode": mode, "peak_mb": max(peak, 0) / 2**20, "step_s": step}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4 x 4 model and sizes 2/4: seconds")
    parser.add_argument("--memory", action="store_true", help="also peak memory per head mode")
    parser.add_argument(
        "--no-greedy", dest="greedy", action="store_false", help="skip greedy (most of the time)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(*json.loads(args.worker))))
        return
    torch.manual_seed(0)
    if args.quick:
        shape, sizes, n_pairs, epochs = (4, 4, 32), [2, 4], 8, 5
    else:
        shape, sizes, n_pairs, epochs = (12, 12, 192), [5, 10, 20, 40], 32, 15
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; model {shape[0]}L x {shape[1]}H, "
        f"width {shape[2]}; {n_pairs} pairs of 12 tokens; PGB-CT {epochs} epochs, batch 8"
    )
    rows, notes, everything, times = compare(*shape, sizes, n_pairs, 12, epochs, args.greedy)
    print("\n".join(notes) + f"\nall {shape[0] * shape[1]} heads at once: effect {everything:.4f}\n")
    names = [n for n in rows[0] if n not in ("size", "greedy time")]
    print("| size | " + " | ".join(names) + " |")
    print("|---" * (1 + len(names)) + "|")
    for row in rows:
        print(f"| {row['size']} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    print("\n| method | time to rank every head |\n|---|---|")
    for name, wall in times.items():
        print(f"| {name} | {wall:.2f} s |")
    for row in rows if args.greedy else []:
        print(f"| greedy to size {row['size']} | {row['greedy time']:.2f} s |")
    if args.memory:
        print("\n| head mode | T | batch | peak memory (one PGB-CT step) | step |\n|---|---|---|---|---|")
        for mode in ("head_output", "attention_pattern"):
            for t in (128, 512):
                cmd = [sys.executable, __file__, "--worker", json.dumps([mode, t, 8])]
                out = json.loads(
                    subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
                )
                print(f"| {mode} | {t} | 8 | {out['peak_mb']:.0f} MB | {out['step_s']:.2f} s |")


if __name__ == "__main__":
    main()
