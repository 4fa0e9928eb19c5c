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
    """From a full attention map A [B, T, T] (already averaged over layers and heads) and mask [B, T, T].

    Only rows with mask entries can contribute, so only those rows are gathered and reduced: the cost
    is (#masked rows x T), not B x T x T.
    """
    b, t, _ = attn.shape
    if attn.dtype in (torch.float16, torch.bfloat16):  # sums in fp32 at least
        attn = attn.float()
    has_mask = mask.any(-1)
    bi, ri = has_mask.nonzero(as_tuple=True)
    cols = torch.arange(t, device=attn.device)
    visible = cols[None, :] <= ri[:, None]  # [R, T]: j <= i
    if key_padding is not None:
        visible = visible & key_padding.bool()[bi]
    mask_rows = mask[bi, ri]
    cause, other = mask_rows & visible, visible & ~mask_rows
    rows = attn[bi, ri]  # [R, T]

    def full(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(b, t, dtype=attn.dtype, device=attn.device).index_put((bi, ri), values)

    return RowStats(
        cause_sum=full((rows * cause).sum(-1)),
        cause_count=full(cause.sum(-1).to(attn.dtype)),
        other_sum=full((rows * other).sum(-1)),
        other_count=full(other.sum(-1).to(attn.dtype)),
        has_mask=has_mask,
    )
