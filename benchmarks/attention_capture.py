"""Benchmark: what CAT costs on top of plain fine-tuning, by attention capture.

    python benchmarks/attention_capture.py                 # CPU, float32, the full table
    python benchmarks/attention_capture.py --device cuda   # GPU, bf16 autocast
    python benchmarks/attention_capture.py --quick         # small sizes, a smoke check

Part 1 times the Re-Attention loss alone (forward + backward) on one attention map, vectorised vs the
per-row loop that the tests use as the specification. Part 2 times one training step (forward,
backward, AdamW step) for plain fine-tuning with SDPA, CAT with the efficient capture and CAT with
eager maps, and measures peak memory. Each (model, T, method) runs in a fresh subprocess so that peak
memory is its own: on CPU the rise of peak RSS over the RSS before the first step, on CUDA
torch.cuda.max_memory_allocated. All ratios are against plain SDPA measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "tiny (2L, 64d)": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "mid (12L, 768d)": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
    },
}
METHODS = ("plain-sdpa", "cat-efficient", "cat-eager")


def causal_mask(batch: int, t: int, n_effects: int = 8) -> torch.Tensor:
    """A GSM8K-like annotation: n_effects 2-token effects spread over the text, 2 causes of 3 tokens each."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch, t, t, dtype=torch.bool)
    for b in range(batch):
        for k in range(n_effects):
            row = int((k + 1) * (t - 4) / n_effects)
            for _ in range(2):
                c0 = int(torch.randint(0, max(row - 4, 1), (1,), generator=g))
                mask[b, row : row + 2, c0 : c0 + 3] = True
    return mask


# ---- part 1: the loss alone --------------------------------------------------------------------
def bench_loss(batch: int = 16, t: int = 256, reps: int = 20) -> dict:
    from catlit.methods.reattention import reattention_loss, row_stats
    from catlit.methods.reattention_loop import reattention_loop

    logits = torch.randn(batch, t, t)
    logits = logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    attn = logits.softmax(-1).requires_grad_(True)
    mask, pad = causal_mask(batch, t), torch.ones(batch, t, dtype=torch.bool)

    def vectorised():
        loss = reattention_loss(row_stats(attn, mask, pad), 2.0, "div").loss
        (grad,) = torch.autograd.grad(loss, attn)
        return loss, grad

    def loop():
        loss, _ = reattention_loop(attn, mask, pad, 2.0, "div")
        (grad,) = torch.autograd.grad(loss, attn)
        return loss, grad

    (lv, gv), (ll, gl) = vectorised(), loop()
    t_vec = min(_timed(vectorised) for _ in range(reps))
    t_loop = min(_timed(loop) for _ in range(2))
    return {
        "loop_ms": 1e3 * t_loop,
        "vectorised_ms": 1e3 * t_vec,
        "speedup": t_loop / t_vec,
        "max_abs_diff_loss": float((lv - ll).abs().detach()),
        "max_abs_diff_grad": float((gv - gl).abs().max()),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- part 2: one training step, in a fresh process per configuration ---------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def train_step(
    model, optimizer, data: dict, capture=None, device: str = "cpu", bf16: bool | None = None
) -> None:
    """One training step: forward (bf16 autocast on CUDA, or where `bf16` says), CE (+ L_attn with a
    capture attached to the model), backward, optimizer step."""
    if capture:
        capture.bind(data)
    from catlit.methods.reattention import reattention_loss

    kind = device.split(":")[0]
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=kind == "cuda" if bf16 is None else bf16):
        out = model(
            input_ids=data["input_ids"],
            attention_mask=data["attention_mask"],
            labels=data["labels"],
            **(capture.forward_kwargs() if capture else {}),
        )
        loss = out.loss
        if capture:
            loss = loss + reattention_loss(capture.stats(out, data), 2.0, "div").loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if capture:
        capture.unbind()
    if kind == "cuda":
        torch.cuda.synchronize()


def step_worker(model_name: str, method: str, t: int, batch: int, device: str, reps: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from catlit.hooks.attention import EagerAttentionCapture, RowAttentionCapture

    torch.manual_seed(0)
    capture = {"cat-efficient": RowAttentionCapture(), "cat-eager": EagerAttentionCapture()}.get(method)
    config = LlamaConfig(vocab_size=1024, max_position_embeddings=max(t, 128), **MODELS[model_name])
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").to(device).train()
    hooks = contextlib.ExitStack()  # the capture stays attached for the life of this worker process
    if capture:
        hooks.enter_context(capture.attached(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1024, (batch, t), device=device)
    data = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids,
        "causal_mask": causal_mask(batch, t).to(device),
    }

    def step():
        train_step(model, optimizer, data, capture, device)

    # AdamW state first (a zero-gradient step), so the base holds model + optimizer and no activations:
    # glibc keeps freed activation memory, so a base taken after any forward would hide the peak.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    step()  # the first step sets the peak; it also warms up kernels and thread pools
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = [_timed(step) for _ in range(reps)]
    # best of N: on a shared machine interference only ever adds time
    return {"step_ms": 1e3 * min(times), "peak_mb": max(peak, 0) / 2**20}


def run_step(model_name, method, t, batch, device, reps) -> dict:
    args = [sys.executable, __file__, "--worker", json.dumps([model_name, method, t, batch, device, reps])]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, T=128 and 256 only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(step_worker(*json.loads(args.worker))))
        return
    torch.set_num_threads(torch.get_num_threads())
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    print(
        f"# machine: {device_name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{'bf16 autocast' if args.device == 'cuda' else 'float32'}\n"
    )

    loss = bench_loss(reps=5 if args.quick else 20)
    print("## Re-Attention loss alone (forward + backward), B=16, T=256\n")
    print("| per-row loop | vectorised | speed-up | max abs diff (loss / grad) |\n|---|---|---|---|")
    print(
        f"| {loss['loop_ms']:.0f} ms | {loss['vectorised_ms']:.2f} ms | {loss['speedup']:.0f}× | "
        f"{loss['max_abs_diff_loss']:.1e} / {loss['max_abs_diff_grad']:.1e} |\n",
        flush=True,
    )

    plan = {"tiny (2L, 64d)": ([128, 512, 1024], 8), "mid (12L, 768d)": ([128, 512, 1024], 1)}
    if args.quick:
        plan = {"tiny (2L, 64d)": ([128, 256], 4)}
    if args.device == "cuda":
        plan = {"tiny (2L, 64d)": ([128, 512, 1024], 16), "mid (12L, 768d)": ([128, 512, 1024, 2048], 8)}
    print("## One training step (forward + backward + AdamW), best of 4-10 repeats\n")
    print("| model | B | T | method | step | × plain | peak memory | × plain |")
    print("|---|---|---|---|---|---|---|---|")
    for model_name, (lengths, batch) in plan.items():
        for t in lengths:
            reps = 4 if model_name.startswith("mid") and args.device == "cpu" else 10
            results = {m: run_step(model_name, m, t, batch, args.device, reps) for m in METHODS}
            plain = results["plain-sdpa"]
            for m, r in results.items():
                print(
                    f"| {model_name} | {batch} | {t} | {m} | {r['step_ms']:.1f} ms | "
                    f"{r['step_ms'] / plain['step_ms']:.2f} | {r['peak_mb']:.0f} MB | "
                    f"{r['peak_mb'] / max(plain['peak_mb'], 1e-9):.2f} |",
                    flush=True,
                )
            eff, eag = results["cat-efficient"], results["cat-eager"]
            print(
                f"|  |  | {t} | eager / efficient | {eag['step_ms'] / eff['step_ms']:.2f}× time | | "
                f"{eag['peak_mb'] / max(eff['peak_mb'], 1e-9):.2f}× memory | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
