"""Tracing methods on planted circuits with a known answer (`catlit.tracing.circuits`).

    python benchmarks/tracing_suite.py              # full sizes: 4 layers x 8 heads, 64 pairs, 3 families
    python benchmarks/tracing_suite.py --quick      # 2 x 4 heads, 32 pairs, Llama only: about a minute
    python benchmarks/tracing_suite.py --scale      # one PGB-CT step and one AtP pass at Llama-3.2-1B's shape

Prints, for every family, method x case: ROC AUC of the method's ranking against the planted circuit,
the held-out effect of its first k components over the circuit's own (k = the circuit's size; null
case: its effect minus the best of 40 random sets of the same size, > 0 = a circuit that is not
there), wall time and peak memory. Then the PGB-CT settings study (losses, schedules, λ, the
released settings) that chose `conf/search/default.yaml`, and the decoy study (plain search vs
knock-out restarts as the decoy's inhibition grows). `--scale` measures one PGB-CT step (source run,
patched run, backward) and one AtP pass on a random model of Llama-3.2-1B's shape (T = 128, batch 8)
against the memory model in `memory_model`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from catlit.tracing import circuits, memory, suite  # noqa: E402

METHODS = ["pgbct", "topk", "greedy", "greedy_backward", "atp", "atp_ig", "hardconcrete", "random"]
RANKING = {"loss": "relative", "schedule": "constant", "lambda1": 5e-4, "lambda2": 5e-4}
VARIANTS = {  # PGB-CT settings compared by the study (each over SEARCH, conf/search/default.yaml)
    "default: pooled, constant λ=0.05": {},
    "scaled, constant λ=0.05": {"loss": "scaled"},
    "inverse (the paper's loss), constant λ=0.05": {"loss": "inverse"},
    "inverse, linear λ=0.05": {"loss": "inverse", "schedule": "linear"},
    "inverse, constant λ=0.02": {"loss": "inverse", "schedule": "constant", "lambda1": 0.02, "lambda2": 0.02},
    "negative, constant λ=0.05": {"loss": "negative", "schedule": "constant"},
    "relative, constant λ=0.05": {"loss": "relative", "schedule": "constant"},
    "ranking: relative, constant λ=5e-4": RANKING,
    "paper: inverse, linear λ=1e-4": {
        "loss": "inverse",
        "lambda1": 1e-4,
        "lambda2": 1e-4,
        "schedule": "linear",
    },
    "default + 4 restarts": {"restarts": 4},
}


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def method_table(rows: list[suite.Row], cases: list[str]) -> str:
    methods = list(dict.fromkeys(r.method for r in rows))
    head = "| method | " + " | ".join(cases) + " | time | peak memory |"
    lines = [head, "|---" * (len(cases) + 3) + "|"]
    for m in methods:
        cells = []
        for c in cases:
            row = next((r for r in rows if r.method == m and r.case == c), None)
            if row is None:
                cells.append("")
            elif c == "null":
                cells.append(f"excess {fmt(row.null_excess, 3)}")
            else:
                cells.append(f"{fmt(row.auroc)} / {fmt(row.effect_at_k)}")
        mine = [r for r in rows if r.method == m]
        wall = statistics.mean(r.wall_s for r in mine)
        peak = max(r.peak_mb for r in mine)
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {wall:.2f} s | {peak:.0f} MB |")
    return "\n".join(lines)


def main_suite(args) -> None:
    shape = dict(layers=2, heads=4, width=64) if args.quick else dict(layers=4, heads=8, width=128)
    n_pairs = 32 if args.quick else 64
    families = args.families.split(",")
    cases = args.cases.split(",")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; {shape['layers']} layers x "
        f"{shape['heads']} heads, width {shape['width']}; {n_pairs} pairs (25% held out); cells: "
        "ROC AUC / held-out effect of the first k over the planted circuit's"
    )
    study: dict[str, list[suite.Row]] = {}
    for family in [] if args.only_decoy else families:
        rows = []
        for name in cases:
            case = circuits.build(name, family, n_pairs=n_pairs, **shape)
            variants = VARIANTS if args.study and name != "null" else None
            found = suite.run_case(case, METHODS, variants=variants)
            rows += [r for r in found if r.method in METHODS]
            for r in found:
                if r.method in VARIANTS:
                    study.setdefault(r.method, []).append(r)
        print(f"\n## {family}\n\n{method_table(rows, cases)}")
    if study:
        print("\n## PGB-CT settings, every family and planted case\n")
        head = "| settings | mean AUROC | mean effect at k | AUROC = 1 | set = circuit | mean size | time |"
        print(head + "\n" + "|---" * 7 + "|")
        for name, rows in study.items():
            perfect, exact = sum(r.auroc > 0.999 for r in rows), sum(r.exact for r in rows)
            size = statistics.mean(len(r.chosen) for r in rows)
            print(
                f"| {name} | {statistics.mean(r.auroc for r in rows):.3f} | "
                f"{statistics.mean(r.effect_at_k for r in rows):.3f} | {perfect}/{len(rows)} | "
                f"{exact}/{len(rows)} | {size:.1f} | {statistics.mean(r.wall_s for r in rows):.2f} s |"
            )
    if args.decoy:
        decoy_study(families, shape, n_pairs)


def decoy_study(families: list[str], shape: dict, n_pairs: int) -> None:
    print("\n## Decoy: a head with an effect of its own that inhibits an AND pair's input (strength s)\n")
    print("| family | s | plain PGB-CT: set, AUROC, effect at k | 4 restarts: set, AUROC, effect at k |")
    print("|---|---|---|---|")
    for family in families:
        for strength in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
            case = circuits.build("decoy", family, n_pairs=n_pairs, strength=strength, **shape)
            rows = suite.run_case(case, ["pgbct"], variants={"robust": {"restarts": 4}})
            cells = [f"{sorted(r.chosen)}, {r.auroc:.2f}, {r.effect_at_k:.2f}" for r in rows]
            print(f"| {family} | {strength} | {cells[0]} | {cells[1]} |")


def memory_model(layers: int, d: int, d_mlp: int, heads: int, vocab: int, b: int, t: int, bytes_=4) -> dict:
    """Bytes of one PGB-CT step in head-output mode (weights aside): the source run's recorded head
    outputs (b·t·d per layer), and the patched run's activations kept for the backward. Per layer
    the saved tensors are about 4 residual-width tensors (norms, q/k/v/o inputs) plus 3 MLP-width
    tensors (gate, up, their product) and the attention's output (with an efficient kernel no t×t map):
    ≈ b·t·(8·d + 3·d_mlp) values; the logits are computed at the scored positions only."""
    per_layer_cache = b * t * d
    per_layer_saved = b * t * (8 * d + 3 * d_mlp)
    return {
        "source cache": layers * per_layer_cache * bytes_,
        "saved for backward": layers * per_layer_saved * bytes_,
        "total": layers * (per_layer_cache + per_layer_saved) * bytes_,
    }


LLAMA_1B = dict(layers=16, d=2048, d_mlp=8192, heads=32, kv=8, vocab=128256)
TINY = dict(layers=2, d=64, d_mlp=128, heads=4, kv=2, vocab=512)


def scale(device: str = "cpu", shape: dict = LLAMA_1B, b: int = 8, t: int = 128) -> list[str]:
    """One PGB-CT step, one AtP pass and one chunked PGB-CT step on a random Llama of `shape`;
    returns the table's lines (also printed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from catlit.models.architectures import Layout
    from catlit.tracing.baselines import Context, atp
    from catlit.tracing.components import ComponentSpace
    from catlit.tracing.engine import Tracer
    from catlit.tracing.pairs import EncodedPair
    from catlit.tracing.search import pgbct

    device = torch.device(device)
    config = LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=shape["d"], intermediate_size=shape["d_mlp"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv"], max_position_embeddings=2048, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = LlamaForCausalLM(config).to(device, dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    vocab, pairs = shape["vocab"], []
    for i in range(b):
        base = torch.randint(10, vocab, (t,), generator=g).tolist()
        source = list(base)
        source[5] = 10 + (base[5] + 1) % (vocab - 10)
        pairs.append(EncodedPair([base], [source], [t], [(0, t - 1, 3, 0), (0, t - 1, 4, 1)], [[]], f"p{i}"))
    tracer = Tracer(model, ComponentSpace(Layout(model), "heads"), pairs, pad_id=0, batch_size=b)
    tracer.prepare([0])  # warm-up
    bytes_ = 2 if dtype == torch.bfloat16 else 4
    predicted = memory_model(shape["layers"], shape["d"], shape["d_mlp"], shape["heads"], vocab, b, t, bytes_)
    lines = [
        f"# Llama shape {shape} (T = {t}, batch {b}) on {device}, {dtype}",
        f"# memory model: {', '.join(f'{k} {v / 2**20:.0f} MB' for k, v in predicted.items())}",
        "| measurement | wall | peak memory rise |",
        "|---|---|---|",
    ]
    print("\n".join(lines), flush=True)

    def row(label: str, fn) -> None:
        with memory.peak_memory(device) as mem:
            started = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - started
        lines.append(f"| {label} | {wall:.1f} s | {mem['mb']:.0f} MB |")
        print(lines[-1], flush=True)

    every = list(range(b))
    row(
        "PGB-CT: one step (source run, patched run, backward) + tie-break gradient",
        lambda: pgbct(tracer, every, epochs=1),
    )
    ctx = Context(tracer, tracer.prepare(every), lambda s: (0.0, 0.0))
    row("AtP: one forward + backward (source run already recorded)", lambda: atp(ctx))
    row(
        "PGB-CT step, search.chunk=2 (4 forward/backward chunks)",
        lambda: pgbct(tracer, every, epochs=1, chunk=2),
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 x 4 heads, 32 pairs, Llama only")
    parser.add_argument("--families", default=None, help="comma-separated (default: gpt2,llama,qwen2)")
    parser.add_argument("--cases", default=",".join(circuits.CASES))
    parser.add_argument("--no-study", dest="study", action="store_false", help="skip the settings study")
    parser.add_argument("--no-decoy", dest="decoy", action="store_false", help="skip the decoy study")
    parser.add_argument("--only-decoy", action="store_true", help="only the decoy study")
    parser.add_argument("--scale", action="store_true", help="only the Llama-3.2-1B-shape measurement")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.families = args.families or ("llama" if args.quick else ",".join(circuits.FAMILIES))
    if args.scale:
        scale(args.device)
    else:
        torch.set_num_threads(1)  # tiny models: more threads only add synchronisation
        main_suite(args)


if __name__ == "__main__":
    main()
