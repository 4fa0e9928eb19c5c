"""The vectorised Re-Attention loss against its specification (docs/cat.md)."""

from __future__ import annotations

import math

import pytest
import torch

from catlit.hooks.attention import EagerAttentionCapture
from catlit.methods.reattention import VARIANTS, reattention_loss, row_stats
from catlit.methods.reattention_loop import reattention_loop
from catlit.schedules import Schedule
from tests.helpers.models import tiny_llama


def share_target(alpha: float) -> float:
    """The share variant's target drawn from the same grid as alpha: 1/3, 2/3, 50/51."""
    return alpha / (1 + alpha)


def random_case(seed: int, batch: int = 3, t: int = 12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, t, t, generator=g, dtype=torch.float64) * 2
    logits = logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
    attn = logits.softmax(-1).requires_grad_(True)
    mask = torch.zeros(batch, t, t, dtype=torch.bool)
    pad = torch.ones(batch, t, dtype=torch.bool)
    pad[1, 9:] = False  # right padding in one row
    for b in range(batch):
        for _ in range(3):  # blocks: rows predict an effect, columns are earlier causes
            r0 = int(torch.randint(2, t - 1, (1,), generator=g))
            c0 = int(torch.randint(0, r0, (1,), generator=g))
            c1 = int(torch.randint(c0 + 1, r0 + 1, (1,), generator=g))
            mask[b, r0 : r0 + 2, c0:c1] = True
    mask[2, 5, :6] = True  # a row whose visible tokens are all causes: N_i empty, skipped
    mask[2, 0, 0] = True  # position 0: C_0 = {0}, N_0 empty
    return attn, mask, pad


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("alpha", [0.5, 2.0, 50.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matches_row_loop_values_and_gradients(variant, alpha, seed):
    attn, mask, pad = random_case(seed)
    expected, n_valid = reattention_loop(attn, mask, pad, alpha, variant, share=share_target(alpha))
    out = reattention_loss(row_stats(attn, mask, pad), alpha, variant, share=share_target(alpha))
    assert int(out.valid_rows) == n_valid > 0
    assert torch.allclose(out.loss, expected, atol=1e-12, rtol=1e-10)
    if expected.requires_grad:
        (g_exp,) = torch.autograd.grad(expected, attn, retain_graph=True)
        (g_vec,) = torch.autograd.grad(out.loss, attn)
        assert torch.allclose(g_vec, g_exp, atol=1e-12)
        assert g_vec.abs().sum() > 0
    else:  # no active row at all: the loss is an exact zero without a path to attn
        assert out.loss.item() == 0.0 and int(out.active_rows) == 0


def test_no_mask_rows_and_zero_denominators_stay_finite():
    t = 6
    attn = torch.zeros(2, t, t, requires_grad=True)
    mask = torch.zeros(2, t, t, dtype=torch.bool)
    out = reattention_loss(row_stats(attn, mask), 2.0, "div")  # no causal mask anywhere
    assert out.loss.item() == 0.0 and int(out.valid_rows) == 0
    out.loss.backward()
    assert torch.isfinite(attn.grad).all()

    hard = torch.zeros(1, t, t)
    hard[0, 4, 1] = 1.0  # all of row 4's attention on its cause: a_n == 0
    hard = hard.requires_grad_(True)
    mask = torch.zeros(1, t, t, dtype=torch.bool)
    mask[0, 4, 1] = True
    mask[0, 3, 0] = True  # row 3: zero attention everywhere: a_c == a_n == 0
    for variant in VARIANTS:
        out = reattention_loss(row_stats(hard, mask), 2.0, variant)
        (grad,) = torch.autograd.grad(out.loss, hard, allow_unused=True)
        assert torch.isfinite(out.loss) and int(out.valid_rows) == 2
        assert grad is None or torch.isfinite(grad).all()


def test_attention_on_causes_lowers_the_loss():
    """Direction check: moving attention mass to the causes must reduce every variant's loss."""
    t = 5
    mask = torch.zeros(1, t, t, dtype=torch.bool)
    mask[0, 4, 0] = True
    spread = torch.full((1, t, t), 0.2)
    focused = spread.clone()
    focused[0, 4] = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])
    for variant in VARIANTS:
        low = reattention_loss(row_stats(focused, mask), 10.0, variant).loss
        high = reattention_loss(row_stats(spread, mask), 10.0, variant).loss
        assert low < high, variant


def test_unknown_variant_is_rejected():
    attn, mask, pad = random_case(0)
    with pytest.raises(ValueError, match="variant"):
        reattention_loss(row_stats(attn, mask, pad), 2.0, "kl")


def test_eager_capture_averages_layers_and_heads_and_trains_the_attention():
    model = tiny_llama("eager")
    ids = torch.randint(0, 50, (2, 8))
    pad = torch.ones(2, 8, dtype=torch.long)
    pad[1, 6:] = 0
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 5, 1:3] = True
    batch = {"attention_mask": pad, "causal_mask": mask}
    capture = EagerAttentionCapture()
    out = model(input_ids=ids, attention_mask=pad, **capture.forward_kwargs())
    stats = capture.stats(out, batch)
    manual = torch.stack(out.attentions).mean(dim=(0, 2))
    expected = row_stats(manual, mask, pad)
    assert torch.allclose(stats.cause_sum, expected.cause_sum, atol=1e-6)
    assert torch.allclose(stats.other_sum, expected.other_sum, atol=1e-6)
    loss = reattention_loss(stats, alpha=100.0).loss
    loss.backward()
    q_grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert q_grad is not None and q_grad.abs().sum() > 0


def test_eager_capture_fails_loudly_without_maps():
    model = tiny_llama("sdpa")
    out = model(input_ids=torch.randint(0, 50, (1, 6)), output_attentions=True)
    with pytest.raises(RuntimeError, match="no attention maps"):
        EagerAttentionCapture().stats(out, {"attention_mask": None, "causal_mask": None})


@pytest.mark.parametrize(
    "schedule,start,mid,end",
    [("constant", 1.0, 1.0, 1.0), ("linear", 1.0, 0.55, 0.1), ("cosine", 1.0, 0.55, 0.1)],
)
def test_gamma_schedules(schedule, start, mid, end):
    sched = Schedule(value=1.0, schedule=schedule, final=0.1)
    assert sched(0.0) == pytest.approx(start)
    assert sched(0.5) == pytest.approx(mid)
    assert sched(1.0) == pytest.approx(end)


def test_exponential_gamma_decays_per_epoch():
    sched = Schedule(value=2.0, schedule="exponential", rate=0.5)
    assert [sched(0.0, e) for e in range(3)] == [2.0, 1.0, 0.5]
