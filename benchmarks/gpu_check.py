"""GPU check: CAT's cost on one GPU at a real model's shape, without downloading anything.

    python benchmarks/gpu_check.py                  # one CUDA GPU, Llama-3.2-1B's shape, about 5 minutes
    python benchmarks/gpu_check.py --tiny --device cpu   # the same code paths on a tiny model (a smoke check)

Random weights of Llama-3.2-1B's configuration (16 layers, width 2048, 32 query / 8 key-value heads,
vocabulary 128,256) in bfloat16. For LoRA (r=16 on q/k/v/o, the presets' default) and full
fine-tuning (AdamW on every weight, float32 master weights through bf16 autocast), it prints:
  - training tokens/s and peak memory of plain fine-tuning (SDPA) and CAT (the efficient capture,
    L_attn over every layer and head), batch 8 at T = 256 and 1024, and their ratio;
  - the largest batch that fits for each at T = 256 and 1024 (doubling, then bisecting, until an
    out-of-memory error);
  - tracing: one PGB-CT step, one AtP pass and one chunked PGB-CT step (heads, T = 128, batch 8).
Each figure comes from the same process and GPU; ratios are within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 1024,
}


def build(shape: dict, tuning: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from catlit.models.factory import keep_trainable_in_float32
    from catlit.models.lora import apply_lora

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(LlamaConfig(**shape), attn_implementation="sdpa")
    model.to(torch.bfloat16 if device == "cuda" else torch.float32)
    if tuning == "lora":
        model = apply_lora(model, r=16, alpha=32, dropout=0.05)
    keep_trainable_in_float32(model)
    return model.train()


def batch(size: int, t: int, vocab: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (size, t), generator=g)
    mask = torch.zeros(size, t, t, dtype=torch.bool)
    for k in range(8):  # eight 2-token effects, each with two 3-token causes before it
        row = int((k + 1) * (t - 4) / 8)
        for c in (row // 3, row // 2):
            mask[:, row : row + 2, c : c + 3] = True
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids, "causal_mask": mask}
    return {k: v.to(device) for k, v in data.items()}


def step_fn(model, optimizer, data: dict, cat: bool, device: str):
    """One training step (benchmarks.attention_capture.train_step) and the capture's attachment."""
    from benchmarks.attention_capture import train_step
    from catlit.hooks.attention import RowAttentionCapture

    capture = RowAttentionCapture() if cat else None
    hooks = contextlib.ExitStack()
    if capture:
        hooks.enter_context(capture.attached(model))
    return (lambda: train_step(model, optimizer, data, capture, device)), hooks


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model, cat: bool, size: int, t: int, device: str, reps: int) -> dict:
    """tokens/s (best of `reps` steps after a warm-up) and peak memory of one configuration."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    data = batch(size, t, model.config.vocab_size, device)
    step, hooks = step_fn(model, optimizer, data, cat, device)
    with hooks:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        step()  # warm-up: kernels, AdamW state
        sync(device)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    del optimizer
    return {"tokens_per_s": size * t / min(times), "peak_gib": peak}


def fits(model, cat: bool, size: int, t: int, device: str) -> bool:
    try:
        measure(model, cat, size, t, device, reps=0)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.empty_cache()


def largest_batch(model, cat: bool, t: int, device: str, limit: int) -> int:
    low, high = 0, 1
    while high <= limit and fits(model, cat, high, t, device):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # low fits, high does not (or is past the limit)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(model, cat, middle, t, device) else (low, middle)
    return low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny model: exercise the script, measure nothing real"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=256, help="stop the largest-batch search here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing measured (use --device cpu --tiny for a smoke run)")
        raise SystemExit(2)
    shape = TINY if args.tiny else LLAMA_1B
    device = args.device
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; shape: {'tiny' if args.tiny else 'Llama-3.2-1B'}")
    print("\n| tuning | T | batch | plain tok/s | CAT tok/s | CAT / plain | plain peak GiB | CAT peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    search = []
    for tuning in ("lora", "full"):
        model = build(shape, tuning, device)
        for t in args.lengths:
            plain = measure(model, False, args.batch, t, device, args.reps)
            cat = measure(model, True, args.batch, t, device, args.reps)
            ratio = cat["tokens_per_s"] / plain["tokens_per_s"]
            speed = f"{plain['tokens_per_s']:.0f} | {cat['tokens_per_s']:.0f} | {ratio:.2f}"
            memory = f"{plain['peak_gib']:.1f} | {cat['peak_gib']:.1f}"
            print(f"| {tuning} | {t} | {args.batch} | {speed} | {memory} |", flush=True)

            if device == "cuda":
                search.append(
                    (tuning, t, *(largest_batch(model, c, t, device, args.max_batch) for c in (False, True)))
                )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    if search:
        print("\n| tuning | T | largest batch, plain | largest batch, CAT |\n|---|---|---|---|")
        for tuning, t, plain, cat in search:
            print(f"| {tuning} | {t} | {plain} | {cat} |")
    from benchmarks.tracing_suite import LLAMA_1B as TRACE_1B
    from benchmarks.tracing_suite import TINY as TRACE_TINY
    from benchmarks.tracing_suite import scale

    print("\nTracing at this shape (benchmarks/tracing_suite.py --scale):")
    scale(device, TRACE_TINY if args.tiny else TRACE_1B, b=8, t=32 if args.tiny else 128)


if __name__ == "__main__":
    main()
