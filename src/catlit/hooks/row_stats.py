"""What every attention capture produces for the Re-Attention loss: per-row sums and counts.

Averaging attention over layers and heads is linear, so the loss needs only, per query row, the
attention on cause tokens and on the other visible tokens, with how many of each there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowStats:
    """Per-row sums of attention on cause tokens and on the other visible tokens, with counts. [B, T]."""

    cause_sum: torch.Tensor
    cause_count: torch.Tensor
    other_sum: torch.Tensor
    other_count: torch.Tensor
    has_mask: torch.Tensor  # bool: the row has at least one mask entry anywhere (M_i non-empty)


def row_stats(attn: torch.Tensor, mask: torch.Tensor, key_padding: torch.Tensor | None = None) -> RowStats:
    """From a full attention map A [B, T, T] (already averaged over layers and heads) and mask [B, T, T]."""
    t = attn.shape[-1]
    visible = torch.ones(t, t, dtype=torch.bool, device=attn.device).tril()
    visible = visible.expand(attn.shape[0], t, t)
    if key_padding is not None:
        visible = visible & key_padding.bool()[:, None, :]
    cause = mask & visible
    other = visible & ~mask
    if attn.dtype in (torch.float16, torch.bfloat16):  # sums in fp32 at least
        attn = attn.float()
    counts = attn.dtype
    return RowStats(
        cause_sum=(attn * cause).sum(-1),
        cause_count=cause.sum(-1).to(counts),
        other_sum=(attn * other).sum(-1),
        other_count=other.sum(-1).to(counts),
        has_mask=mask.any(-1),
    )
