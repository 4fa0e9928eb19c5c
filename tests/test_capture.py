"""The efficient attention capture gives the eager full-map path's loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from catlit.hooks.attention import EagerAttentionCapture, RowAttentionCapture
from catlit.methods.reattention import reattention_loss
from catlit.models.factory import enable_checkpointing
from catlit.models.lora import apply_lora
from tests.helpers.models import tiny_config

VOCAB = 64


def config(kind: str):
    """Three layers, grouped-query attention for the Llama-like families (2 query heads per key head)."""
    return tiny_config(kind, layers=3, vocab=VOCAB, tie=False)


def make_batch(seed: int = 0, b: int = 3, t: int = 12) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    attn = torch.ones(b, t, dtype=torch.long)
    attn[1, 8:] = 0  # right padding
    mask = torch.zeros(b, t, t, dtype=torch.bool)
    for i in range(b):
        length = int(attn[i].sum())
        for _ in range(2):
            r0 = int(torch.randint(3, length - 1, (1,), generator=g))
            c0 = int(torch.randint(0, r0 - 1, (1,), generator=g))
            mask[i, r0 : r0 + 2, c0 : c0 + 2] = True
    mask[0, 1, 0] = True  # a row with one visible cause and one other token
    return {"input_ids": ids, "attention_mask": attn, "causal_mask": mask}


def loss_and_grads(model, capture, batch, variant="div", autocast=False):
    model.zero_grad(set_to_none=True)
    with capture.attached(model):  # backward inside: a non-reentrant checkpoint recomputes in it
        capture.bind(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                **capture.forward_kwargs(),
            )
            stats = capture.stats(out, batch)
        loss = reattention_loss(stats, alpha=100.0, variant=variant).loss + 0.0 * out.logits.sum()
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, stats


def pair(kind: str, dtype=torch.float64, lora: bool = False, ckpt: bool = False):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config(kind), attn_implementation="eager").to(dtype)
    if ckpt:
        enable_checkpointing(base)
    if lora:
        base = apply_lora(base, r=4, alpha=8, dropout=0.0)
        for n, p in base.named_parameters():  # non-zero B so every LoRA weight gets a gradient
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    base.train()
    fast = copy.deepcopy(base)
    fast.set_attn_implementation("sdpa")  # the efficient capture wraps the model's fast attention
    return base, EagerAttentionCapture(), fast, RowAttentionCapture()


def assert_same(eager_result, fast_result, atol):
    """Eager Llama/Qwen2 take the softmax in fp32 even for fp64 models: the reference is fp32-exact."""
    (le, ge, se), (lf, gf, sf) = eager_result, fast_result
    assert torch.allclose(le, lf, atol=atol), (le, lf)
    assert torch.equal(se.has_mask, sf.has_mask)
    rows = se.has_mask  # statistics of rows without mask entries never enter the loss
    for field in ("cause_count", "other_count", "cause_sum", "other_sum"):
        a, b = getattr(se, field)[rows].double(), getattr(sf, field)[rows].double()
        assert torch.allclose(a, b, atol=max(atol, 1e-6)), field
    assert ge.keys() == gf.keys() and len(ge) > 0
    for name in ge:
        assert torch.allclose(ge[name], gf[name], atol=atol, rtol=1e-5), name
    assert any(g.abs().sum() > 0 for n, g in gf.items() if "attn" in n or "q_proj" in n or "lora" in n)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("variant", ["div", "hinge"])
def test_efficient_matches_eager_with_padding_and_gqa(kind, variant):
    eager_model, eager, fast_model, fast = pair(kind)
    batch = make_batch()
    assert_same(
        loss_and_grads(eager_model, eager, batch, variant),
        loss_and_grads(fast_model, fast, batch, variant),
        atol=1e-7,
    )


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_efficient_matches_eager_under_lora(kind):
    eager_model, eager, fast_model, fast = pair(kind, lora=True)
    batch = make_batch(1)
    result = loss_and_grads(fast_model, fast, batch)
    assert all("lora_" in n for n in result[1])
    assert_same(loss_and_grads(eager_model, eager, batch), result, atol=1e-7)


def test_efficient_matches_eager_with_non_reentrant_checkpointing():
    eager_model, eager, fast_model, fast = pair("llama", ckpt=True)
    batch = make_batch(2)
    assert_same(loss_and_grads(eager_model, eager, batch), loss_and_grads(fast_model, fast, batch), atol=1e-7)


def test_efficient_matches_eager_under_bf16_autocast():
    eager_model, eager, fast_model, fast = pair("llama", dtype=torch.float32)
    batch = make_batch(3)
    le, ge, _ = loss_and_grads(eager_model, eager, batch, autocast=True)
    lf, gf, _ = loss_and_grads(fast_model, fast, batch, autocast=True)
    assert torch.allclose(le, lf, rtol=2e-2, atol=2e-2)
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in ge.values()]), torch.cat([g.flatten() for g in gf.values()]), dim=0
    )
    assert cos > 0.98


@pytest.mark.parametrize("layers,heads", [([1], "all"), ("last:2", [0, 3]), ("all", {"0": [1], "2": [0, 2]})])
def test_layer_and_head_selection_agree(layers, heads):
    eager_model, _, fast_model, _ = pair("qwen2")
    batch = make_batch(4)
    assert_same(
        loss_and_grads(eager_model, EagerAttentionCapture(layers, heads), batch),
        loss_and_grads(fast_model, RowAttentionCapture(layers, heads), batch),
        atol=1e-7,
    )
    everything = loss_and_grads(eager_model, EagerAttentionCapture(), batch)[0]
    assert not torch.allclose(
        loss_and_grads(eager_model, EagerAttentionCapture(layers, heads), batch)[0], everything
    )


def test_reentrant_checkpointing_is_refused():
    model = AutoModelForCausalLM.from_config(config("llama"))
    enable_checkpointing(model, use_reentrant=True)
    for capture in (EagerAttentionCapture(), RowAttentionCapture()):
        with (
            pytest.raises(RuntimeError, match="use_reentrant=True makes the Re-Attention loss train nothing"),
            capture.attached(model),
        ):
            pass


def test_unbound_capture_is_plain_sdpa_and_stats_need_a_bind():
    _, _, fast_model, fast = pair("llama", dtype=torch.float32)
    reference = copy.deepcopy(fast_model)
    ids = make_batch()["input_ids"]
    with fast.attached(fast_model), torch.no_grad():
        assert fast_model.config._attn_implementation == "catlit_sdpa"
        assert torch.equal(fast_model(ids).logits, reference(ids).logits)
        assert fast.records == {}
        with pytest.raises(RuntimeError, match="without bind"):
            fast.stats(None, make_batch())
    assert fast_model.config._attn_implementation == "sdpa"  # restored on exit


def test_a_model_that_bypasses_the_interface_is_reported():
    _, _, fast_model, capture = pair("llama", dtype=torch.float32)
    batch = make_batch()
    with capture.attached(fast_model):
        fast_model.set_attn_implementation("eager")  # as a model that never calls catlit_sdpa
        capture.bind(batch)
        out = fast_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        with pytest.raises(RuntimeError, match=r"saw no attention call for layers \[0, 1, 2\]"):
            capture.stats(out, batch)


def test_eager_base_is_rejected_for_the_efficient_capture():
    eager_model, _, _, _ = pair("llama", dtype=torch.float32)
    with pytest.raises(ValueError, match="method.capture=eager"), RowAttentionCapture().attached(eager_model):
        pass


@pytest.mark.parametrize("layers,heads", [("all", "all"), ("last:2", [0, 3])])
def test_per_head_statistics_agree_and_average_to_the_mean_capture(layers, heads):
    eager_model, _, fast_model, _ = pair("llama")
    batch = make_batch(5)
    eager_result = loss_and_grads(eager_model, EagerAttentionCapture(layers, heads, per_head=True), batch)
    fast_result = loss_and_grads(fast_model, RowAttentionCapture(layers, heads, per_head=True), batch)
    assert_same(eager_result, fast_result, atol=1e-7)
    stats = fast_result[2]
    n_units = (3 if layers == "all" else 2) * (4 if heads == "all" else 2)
    assert stats.cause_sum.shape == (*batch["input_ids"].shape, n_units)
    # the mean over (layer, head) units is the one-unit capture's statistic
    mean = loss_and_grads(fast_model, RowAttentionCapture(layers, heads), batch)[2]
    rows = mean.has_mask
    assert torch.allclose(stats.cause_sum.mean(-1)[rows], mean.cause_sum[rows], atol=1e-7)
    assert torch.allclose(stats.other_sum.mean(-1)[rows], mean.other_sum[rows], atol=1e-7)
