"""On a GPU: bf16 LoRA CAT at a 1B model's shape, the efficient capture under sdpa and flash attention,
and DDP / FSDP over the GPUs present. Each test names what it needs and skips, saying so, without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from benchmarks.gpu_check import LLAMA_1B

from catlit.hooks.attention import EagerAttentionCapture, RowAttentionCapture
from catlit.methods.reattention import reattention_loss
from tests.helpers.run_if import RunIf
from tests.helpers.runs import ROOT, SMALL_DATA


def cat_batch(size: int, t: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (size, t), generator=g)
    mask = torch.zeros(size, t, t, dtype=torch.bool)
    mask[:, t - 4 : t - 2, 10:20] = True
    mask[:, t // 2 : t // 2 + 2, 3:8] = True
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids, "causal_mask": mask}
    return {k: v.cuda() for k, v in data.items()}


def cat_step(model, capture, data) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    with capture.attached(model):
        capture.bind(data)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(
                input_ids=data["input_ids"], attention_mask=data["attention_mask"], **capture.forward_kwargs()
            )
            loss = reattention_loss(capture.stats(out, data), 100.0, "div").loss
        loss.backward()
    return loss.detach(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


@RunIf(min_gpus=1, bf16=True)
def test_bf16_lora_cat_at_a_1b_shape_matches_eager_maps():
    from transformers import LlamaConfig, LlamaForCausalLM

    from catlit.models.factory import keep_trainable_in_float32
    from catlit.models.lora import apply_lora

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM._from_config(LlamaConfig(**LLAMA_1B), attn_implementation="sdpa")
    model = apply_lora(model.to(torch.bfloat16), r=16, alpha=32, dropout=0.0)
    for name, param in model.named_parameters():  # non-zero B: every LoRA weight gets a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    keep_trainable_in_float32(model)
    data = cat_batch(2, 256, LLAMA_1B["vocab_size"])
    fast_loss, fast = cat_step(model, RowAttentionCapture(), data)
    eager_loss, eager = cat_step(model, EagerAttentionCapture(), data)
    assert torch.isfinite(fast_loss) and torch.allclose(fast_loss, eager_loss, rtol=2e-2, atol=2e-2)
    a, b = torch.cat([g.flatten() for g in fast.values()]), torch.cat([g.flatten() for g in eager.values()])
    assert a.abs().sum() > 0 and torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.98
    assert all("lora_" in n for n in fast)


@pytest.mark.parametrize(
    "attention", ["sdpa", pytest.param("flash_attention_2", marks=RunIf(package="flash_attn"))]
)
@RunIf(min_gpus=1, bf16=True)
def test_efficient_capture_wraps_the_gpu_attention(attention):
    from transformers import LlamaConfig, LlamaForCausalLM

    small = {
        **LLAMA_1B,
        "num_hidden_layers": 2,
        "hidden_size": 256,
        "intermediate_size": 512,
        "vocab_size": 1024,
    }
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(
        LlamaConfig(**small), attn_implementation=attention, dtype=torch.bfloat16
    ).cuda()
    data = cat_batch(2, 128, small["vocab_size"])
    fast_loss, fast = cat_step(model, RowAttentionCapture(), data)
    eager_loss, _ = cat_step(model, EagerAttentionCapture(), data)
    assert model.config._attn_implementation == attention  # restored after the capture
    assert torch.allclose(fast_loss, eager_loss, rtol=2e-2, atol=2e-2) and len(fast) > 0


def train_py(tmp_path, *overrides) -> dict:
    cmd = [
        sys.executable,
        "train.py",
        f"paths.log_dir={tmp_path}",
        "logger=csv",
        "trainer.max_epochs=1",
        *SMALL_DATA,
    ]
    result = subprocess.run([*cmd, *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = tmp_path.glob("runs/train/*/metrics.json")
    return json.loads(metrics.read_text())


@RunIf(min_gpus=1, bf16=True)
def test_train_py_on_one_gpu_in_bf16(tmp_path):
    metrics = train_py(tmp_path, "trainer=gpu", "method=cat")
    assert 0.0 <= metrics["test/ood/acc"] <= 1.0


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@RunIf(min_gpus=2)
def test_ddp_and_fsdp_train_on_the_gpus_present(tmp_path, strategy):
    devices = torch.cuda.device_count()
    metrics = train_py(
        tmp_path, f"trainer={strategy}", "trainer.accelerator=gpu", f"trainer.devices={devices}"
    )
    assert 0.0 <= metrics["test/iid/acc"] <= 1.0
