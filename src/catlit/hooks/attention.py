"""Attention capture: turning a forward pass into the per-row statistics the Re-Attention loss needs.

A capture tells the model setup which attention implementation it needs, adds its forward keyword
arguments, and reduces what the forward produced to `RowStats`. The eager capture reads the full
maps returned with `output_attentions=True` (B·H·T² floats per layer, kept until backward).
"""

from __future__ import annotations

import torch

from catlit.hooks.row_stats import RowStats, row_stats


class EagerAttentionCapture:
    attn_implementation = "eager"

    def forward_kwargs(self) -> dict:
        return {"output_attentions": True}

    def stats(self, outputs, batch: dict) -> RowStats:
        maps = getattr(outputs, "attentions", None)
        if not maps or any(m is None for m in maps):
            raise RuntimeError(
                "the model returned no attention maps with output_attentions=True (transformers' sdpa "
                "and flash kernels never do). CAT's eager capture needs attn_implementation='eager'."
            )
        # mean over layers and heads, accumulated to avoid stacking L maps
        mean = torch.zeros_like(maps[0][:, 0], dtype=torch.float32)
        for layer_map in maps:
            mean = mean + layer_map.float().mean(dim=1)
        mean = mean / len(maps)
        return row_stats(mean, batch["causal_mask"], batch["attention_mask"])


CAPTURES = {"eager": EagerAttentionCapture}


def make_capture(kind: str):
    if kind not in CAPTURES:
        raise ValueError(f"method.capture={kind!r} is not available; choose from {sorted(CAPTURES)}")
    return CAPTURES[kind]()
