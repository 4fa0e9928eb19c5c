"""A real pretrained model on a CPU: SmolLM2-135M-Instruct's load and training-step costs.

    catlit-fetch smollm2 && python benchmarks/real_model_cpu.py [--threads 2] [--reps 3]

Prints, each configuration in a fresh process (so its peak memory is its own):
  - load time: the converted folder (`model.path=HuggingFaceTB/SmolLM2-135M-Instruct`, safetensors)
    against the GGUF file (`model.gguf_file`, dequantized on every load);
  - one training step (forward, CE, backward, AdamW) on the STG task's own batch (toy preset, 16 rows,
    their real length on SmolLM2's tokenizer, causal masks from their annotations): seconds, tokens/s
    and the process's peak resident memory, for LoRA (r=16 on q/k/v/o, the preset's) and full
    fine-tuning, float32 and bf16 autocast (bf16-mixed), plain and CAT (the Re-Attention loss over
    every layer and head through the efficient capture);
  - one evaluation CE on an evaluation-sized batch (128 STG rows): the model's own `labels=` loss,
    which projects every position onto the 49,152-token vocabulary, against catlit's answer-only
    loss (`catlit.methods.answer_loss`): seconds, peak memory, and the two losses (equal).
Ratios are within one run on one machine; a second busy process on the same cores changes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def stg_batch(tokenizer, size: int = 16) -> dict:
    """The first training batch of the STG toy preset, collated as training sees it."""
    from catlit.data.collate import Collator
    from catlit.data.sources import stg_datamodule

    data = stg_datamodule(preset="toy", seed=0, batch_size=size)
    data.set_tokenizer(tokenizer)
    data.setup("fit")
    collate = Collator(tokenizer.pad_token_id, ("causal_mask",))
    return collate([data.train_set[i] for i in range(size)])


def load_worker(kind: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    from catlit.models.fetch import gguf_path
    from catlit.models.loading import load_pretrained

    start = time.perf_counter()
    if kind == "gguf":
        gguf = gguf_path("smollm2")
        load_pretrained(str(gguf.parent), gguf_file=gguf.name)
    else:
        load_pretrained(HUB_ID)
    return {"load_s": time.perf_counter() - start, "peak_gib": _peak_gib()}


def step_worker(tuning: str, precision: str, method: str, threads: int, reps: int) -> dict:
    torch.set_num_threads(threads)
    from benchmarks.attention_capture import train_step
    from catlit.hooks.attention import RowAttentionCapture
    from catlit.models.factory import keep_trainable_in_float32
    from catlit.models.loading import load_pretrained
    from catlit.models.lora import apply_lora

    torch.manual_seed(0)
    model, tokenizer = load_pretrained(HUB_ID)
    if tuning == "lora":
        model = apply_lora(model, r=16, alpha=32, dropout=0.05)
    keep_trainable_in_float32(model)
    model.train()
    data = stg_batch(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    capture = RowAttentionCapture() if method == "cat" else None
    hooks = contextlib.ExitStack()
    if capture:
        hooks.enter_context(capture.attached(model))

    def step() -> None:
        train_step(model, optimizer, data, capture, "cpu", bf16=precision == "bf16-mixed")

    with hooks:
        step()  # warm-up: AdamW state, thread pools
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    tokens = int(data["attention_mask"].sum())
    best = min(times)
    return {
        "step_s": best,
        "tokens_per_s": tokens / best,
        "shape": tuple(data["input_ids"].shape),
        "peak_gib": _peak_gib(),
    }


def eval_worker(loss: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    from catlit.methods.answer_loss import answer_forward
    from catlit.models.loading import load_pretrained

    model, tokenizer = load_pretrained(HUB_ID)
    model.eval()
    data = stg_batch(tokenizer, size=128)
    loaded = _peak_gib()
    start = time.perf_counter()
    with torch.no_grad():
        if loss == "full logits":
            keys = ("input_ids", "attention_mask", "labels")
            value = model(**{k: data[k] for k in keys}).loss
        else:
            value, _ = answer_forward(model, data)
    return {
        "s": time.perf_counter() - start,
        "shape": tuple(data["input_ids"].shape),
        "loaded_gib": loaded,
        "peak_gib": _peak_gib(),
        "ce": float(value),
    }


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def in_fresh_process(fn, *args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from catlit.models.fetch import folder_of, problems

    if problems(folder_of("smollm2")):
        print("real_model_cpu: SmolLM2 is not fetched; run `catlit-fetch smollm2` first")
        raise SystemExit(2)
    print(f"torch {torch.__version__}; {args.threads} threads; best of {args.reps} steps after a warm-up\n")
    print("| load | seconds | peak RSS GiB |\n|---|---|---|")
    for kind in ("converted", "gguf"):
        r = in_fresh_process(load_worker, kind, args.threads)
        print(f"| {kind} | {r['load_s']:.1f} | {r['peak_gib']:.2f} |", flush=True)
    print("\n| tuning | precision | method | batch x T | step s | tokens/s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for tuning in ("lora", "full"):
        for precision in ("32-true", "bf16-mixed"):
            for method in ("plain", "cat"):
                r = in_fresh_process(step_worker, tuning, precision, method, args.threads, args.reps)
                b, t = r["shape"]
                print(
                    f"| {tuning} | {precision} | {method} | {b} x {t} | {r['step_s']:.2f} | "
                    f"{r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} |",
                    flush=True,
                )
    print("\n| evaluation CE | batch x T | seconds | peak RSS GiB | above the loaded model | CE |")
    print("|---|---|---|---|---|---|")
    for loss in ("full logits", "answer only"):
        r = in_fresh_process(eval_worker, loss, args.threads)
        b, t = r["shape"]
        print(
            f"| {loss} | {b} x {t} | {r['s']:.2f} | {r['peak_gib']:.2f} | "
            f"{r['peak_gib'] - r['loaded_gib']:.2f} | {r['ce']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
