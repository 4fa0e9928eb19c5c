"""Benchmark: what ICLM costs next to one LoRA adapter on the same frozen model.

    python benchmarks/iclm_cost.py                 # CPU, the full table
    python benchmarks/iclm_cost.py --device cuda   # GPU, bf16 autocast
    python benchmarks/iclm_cost.py --quick         # small sizes, a smoke check

One training step (forward, every loss term, backward, AdamW step) for:
  lora         one LoRA adapter (q/k/v/o, r=8), answer-only CE (method=lora)
  iclm-dense   ICLM, m=2, every domain module on every input (the released design)
  iclm-sparse  ICLM, m=2, each domain module on the inputs routed to it
  iclm-sparse-projected  sparse, with `head=projected` (Linear(2D -> D) before the base's frozen
               head instead of a new Linear(2D -> V))
  copies       the released memory layout: m+2 = 4 copies of the base, one adapter each, each run
               once (weights and activations only, no router: a lower bound for that layout)
at two sequence lengths, with and without activation checkpointing (model.gradient_checkpointing).
Each configuration runs in a fresh process so its peak memory is its own: on CPU the rise of peak
RSS over the RSS before the model is built (so the base weights count), on CUDA
torch.cuda.max_memory_allocated. Ratios are against `lora` measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.attention_capture import MODELS as CAPTURE_MODELS  # noqa: E402
from benchmarks.attention_capture import _rss_bytes, _timed, cpu_name  # noqa: E402

MODELS = {
    "tiny (2L, 64d)": CAPTURE_MODELS["tiny (2L, 64d)"],
    "base (8L, 512d)": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
    },
}
CONFIGS = ("lora", "iclm-dense", "iclm-sparse", "iclm-sparse-projected", "copies")
ADAPTER = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _batch(batch: int, t: int, vocab: int, device: str) -> dict:
    """A prompt of 3/4 of the tokens, a 1/4 answer; half the rows of each of two token ranges."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab // 2, (batch, t), generator=g)
    ids[batch // 2 :] += vocab // 2  # two "sources" with disjoint tokens: the router can split them
    labels = ids.clone()
    labels[:, : 3 * t // 4] = -100
    prompt = torch.zeros(batch, t, dtype=torch.bool)
    prompt[:, : 3 * t // 4] = True
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "prompt_positions": prompt,
    }
    return {k: v.to(device) for k, v in out.items()}


def _model(model_name: str, t: int, checkpointing: bool, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from catlit.models.factory import enable_checkpointing

    config = LlamaConfig(vocab_size=8192, max_position_embeddings=max(t, 128), **MODELS[model_name])
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").to(device)
    if checkpointing:
        enable_checkpointing(model)
    return model


def step_worker(
    model_name: str, config: str, t: int, batch: int, device: str, reps: int, checkpointing: bool
) -> dict:
    from catlit.methods.iclm import IndependentCausalLM
    from catlit.models.lora import apply_lora

    torch.manual_seed(0)
    base_rss = _rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    data = _batch(batch, t, 8192, device)
    method = None
    if config == "copies":
        models = [apply_lora(_model(model_name, t, checkpointing, device), **ADAPTER) for _ in range(4)]
    elif config == "lora":
        models = [apply_lora(_model(model_name, t, checkpointing, device), **ADAPTER)]
    else:
        mode = "sparse" if "sparse" in config else "dense"
        head = "projected" if config.endswith("projected") else "full"
        method = IndependentCausalLM(adapter=ADAPTER, mode=mode, head=head)
        models = [method.build(_model(model_name, t, checkpointing, device))]
        method.to(device).train()
    for model in models:
        model.train()
    params = [p for m in [*models, *([method] if method else [])] for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    use_bf16 = device == "cuda"

    def step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16):
            if method is not None:
                out = method.forward(models[0], data, "train")
                terms, _ = method.losses(out, data, 0.0, 0)
                loss = out.loss + sum(terms.values())
            else:
                loss = sum(m(input_ids=data["input_ids"], labels=data["labels"]).loss for m in models)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # the first step sets the peak (AdamW state included)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    times = [_timed(step) for _ in range(reps)]
    return {"step_ms": 1e3 * min(times), "peak_mb": max(peak, 0) / 2**20}


def run_step(*args) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(list(args))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(model_name: str, lengths: list[int], batch: int, device: str, reps: int) -> str:
    lines = [
        "| T | activation checkpointing | config | step ms | x lora | peak MB | x lora |",
        "|---|---|---|---|---|---|---|",
    ]
    for checkpointing in (False, True):
        for t in lengths:
            results = {c: run_step(model_name, c, t, batch, device, reps, checkpointing) for c in CONFIGS}
            ref = results["lora"]
            for config, r in results.items():
                lines.append(
                    f"| {t} | {'on' if checkpointing else 'off'} | {config} | {r['step_ms']:.0f} | "
                    f"{r['step_ms'] / ref['step_ms']:.2f} | {r['peak_mb']:.0f} | "
                    f"{r['peak_mb'] / ref['peak_mb']:.2f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, short sequences")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(step_worker(*json.loads(args.worker))))
        return
    model_name = "tiny (2L, 64d)" if args.quick else "base (8L, 512d)"
    lengths = [32, 64] if args.quick else [64, 256]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    print(f"# machine: {device_name}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# model: {model_name}, batch 4, best of {1 if args.quick else 3} steps after the first\n")
    print(table(model_name, lengths, 4, args.device, 1 if args.quick else 3))


if __name__ == "__main__":
    main()
