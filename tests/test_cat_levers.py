"""CAT's levers beyond the paper's objective: the share target, per-head constraints, a relative alpha."""

from __future__ import annotations

import torch

from catlit.hooks.attention import stack_units
from catlit.methods import CausalAttentionTuning, MethodOutput
from catlit.methods.reattention import reattention_loss, row_stats


def two_heads_one_row():
    """One answer row (t=3), causes = token 0. Head A attends to the cause, head B to token 1 (a cue)."""
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 2, 0] = True
    head_a = torch.tensor([[[1.0, 0, 0], [0.5, 0.5, 0], [0.9, 0.05, 0.05]]])
    head_b = torch.tensor([[[1.0, 0, 0], [0.5, 0.5, 0], [0.1, 0.85, 0.05]]])
    return mask, head_a, head_b


def test_per_head_constraint_sees_the_head_that_the_mean_hides():
    mask, head_a, head_b = two_heads_one_row()
    mean = row_stats((head_a + head_b) / 2, mask)
    per_head = stack_units([row_stats(head_a, mask), row_stats(head_b, mask)])
    # mean map: cause 0.5 vs other mean 0.25 (ratio 2); head B alone: 0.1 vs 0.25 (ratio 0.4)
    assert int(reattention_loss(mean, alpha=1.0).active_rows) == 0
    out = reattention_loss(per_head, alpha=1.0)
    assert int(out.valid_rows) == 2 and int(out.active_rows) == 1
    assert out.loss != 0  # the div loss is negative while it acts


def test_share_variant_acts_below_the_share_and_pushes_mass_to_the_causes():
    mask, head_a, head_b = two_heads_one_row()
    logits = torch.log(head_b).requires_grad_(True)
    attn = logits.softmax(-1)
    out = reattention_loss(row_stats(attn, mask), variant="share", share=0.5)
    assert int(out.active_rows) == 1 and abs(float(out.share) - 0.1) < 1e-6
    out.loss.backward()
    assert logits.grad[0, 2, 0] < 0 < logits.grad[0, 2, 1]  # descent raises the cause, lowers the cue
    satisfied = reattention_loss(row_stats(head_a, mask), variant="share", share=0.5)
    assert int(satisfied.active_rows) == 0 and float(satisfied.loss) == 0.0


def test_relative_alpha_is_fixed_at_the_first_step_and_checkpointed():
    mask, head_a, head_b = two_heads_one_row()
    method = CausalAttentionTuning(alpha=4.0, alpha_mode="relative")
    first = row_stats(head_b, mask)
    threshold = method.threshold(first)
    reference = float(reattention_loss(first).ratio)
    assert abs(threshold - 4.0 * reference) < 1e-6
    assert method.threshold(row_stats(head_a, mask)) == threshold  # later steps do not move it
    restored = CausalAttentionTuning(alpha=4.0, alpha_mode="relative")
    restored.load_state(method.state())
    assert restored.threshold(row_stats(head_a, mask)) == threshold


def test_active_steps_are_counted_and_survive_a_checkpoint():
    mask, head_a, head_b = two_heads_one_row()
    method = CausalAttentionTuning(alpha=2.0)
    assert method.summary() == {} and method.summary_lines({}) == []  # a test-only run reports nothing
    for maps in (head_b, head_a, head_b):  # active, inactive, active: a forward's statistics
        method.losses(MethodOutput(loss=torch.zeros(()), parts={"stats": row_stats(maps, mask)}), {}, 0.0, 0)
    assert method.summary()["train/attn_active_steps"] == 2 / 3
    restored = CausalAttentionTuning(alpha=2.0)
    restored.load_state(method.state())
    assert restored.summary() == method.summary()
