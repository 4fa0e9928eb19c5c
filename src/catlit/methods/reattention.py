"""The Re-Attention loss (L_attn) of Causal Attention Tuning, vectorised over batch and rows.

For each query row i with causal-mask entries M_i (docs/cat.md):
  C_i = {j <= i : M_ij}, N_i = {j <= i : not M_ij}  (diagonal and position 0 included, key padding not)
  a_c = mean_{j in C_i} A_ij,  a_n = mean_{j in N_i} A_ij,  r_i = a_c / a_n
A row is *valid* when M_i, C_i and N_i are all non-empty. The ratio variants (the paper's `div` and
its relatives) add a loss only while r_i < alpha. The `share` variant targets the share of the row's
attention mass on the causes, s_i = Σ_C A_ij / Σ_{C∪N} A_ij, and acts while s_i < share: a mean ratio
can pass alpha while one non-cause token (a spurious cue) takes much of the mass, a share cannot.
Every valid row counts in the denominator. Because A is a mean over layers and heads (linear), only
the two per-row sums and their counts are needed, which is what `RowStats` carries; with per-head
statistics the sums carry a trailing unit axis and every (row, head) pair is a row of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from catlit.hooks.row_stats import RowStats, row_stats

__all__ = [
    "RATIO_VARIANTS",
    "VARIANTS",
    "ReAttentionOutput",
    "RowMeasures",
    "RowStats",
    "reattention_loss",
    "row_ratios",
    "row_stats",
]

RATIO_VARIANTS = ("div", "div2", "nll", "hinge")
VARIANTS = (*RATIO_VARIANTS, "share")
_TINY = 1e-6  # keeps -log(share) finite for a row with no mass on its causes


@dataclass
class ReAttentionOutput:
    loss: torch.Tensor  # Σ per-row loss / #valid rows (not yet scaled by gamma)
    ratio: torch.Tensor  # mean r_i over valid rows (detached; inf rows excluded), for logging
    valid_rows: torch.Tensor  # number of valid rows (row-head pairs with per-head statistics)
    active_rows: torch.Tensor  # rows below their threshold (those that add a loss)
    share: torch.Tensor  # mean share of attention mass on causes over valid rows (detached)


def _broadcast(stats: RowStats) -> tuple[torch.Tensor, ...]:
    """Counts and row flags shaped like the sums ([B, T] or [B, T, units])."""
    extra = stats.cause_sum.dim() - stats.cause_count.dim()
    expand = (lambda x: x[..., None]) if extra == 1 else (lambda x: x)
    return expand(stats.cause_count), expand(stats.other_count), expand(stats.has_mask)


class RowMeasures(NamedTuple):
    valid: torch.Tensor  # rows with mask entries, causes and other tokens
    a_c: torch.Tensor  # mean attention on the causes
    a_n: torch.Tensor  # mean attention on the other visible tokens
    ratio: torch.Tensor  # a_c / a_n (+inf where a_n == 0)
    share: torch.Tensor  # share of the row's attention mass on the causes


def row_ratios(stats: RowStats) -> RowMeasures:
    """Per-row means, ratio and share of mass on the causes ([B, T] or [B, T, units])."""
    cause_count, other_count, has_mask = _broadcast(stats)
    valid = (has_mask & (cause_count > 0) & (other_count > 0)).expand(stats.cause_sum.shape)
    a_c = stats.cause_sum / cause_count.clamp(min=1)
    a_n = stats.other_sum / other_count.clamp(min=1)
    # a_n == 0 means all attention is already on the causes: ratio +inf, no loss.
    positive = a_n > 0
    ratio = torch.where(positive, a_c / torch.where(positive, a_n, 1.0), math.inf)
    total = stats.cause_sum + stats.other_sum
    share = stats.cause_sum / torch.where(total > 0, total, 1.0)
    return RowMeasures(valid, a_c, a_n, ratio, share)


def reattention_loss(
    stats: RowStats, alpha: float = 2.0, variant: str = "div", share: float = 0.5
) -> ReAttentionOutput:
    if variant not in VARIANTS:
        raise ValueError(f"Re-Attention variant must be one of {VARIANTS}, got {variant!r}")
    valid, a_c, a_n, ratio, row_share = row_ratios(stats)
    if variant == "share":
        active = valid & (row_share < share)
        s = torch.where(active, row_share, 1.0).clamp(min=_TINY)
        per_row = math.log(share) - torch.log(s)  # 0 at the target, grows as the share vanishes
    else:
        active = valid & (ratio < alpha)
        # Safe operands inside inactive rows keep NaN out of the gradients of torch.where.
        a_c_s = torch.where(active, a_c, 0.0)
        a_n_s = torch.where(active, a_n, 1.0)
        if variant == "div":
            per_row = -torch.log1p(a_c_s) / torch.log1p(a_n_s)
        elif variant == "div2":
            per_row = -torch.log1p(a_c_s / (1.0 + a_n_s))
        elif variant == "nll":
            per_row = -a_c_s / (a_c_s + a_n_s)
        else:
            per_row = torch.relu(alpha - torch.where(active, ratio, alpha))
    n_valid = valid.sum()
    loss = torch.where(active, per_row, 0.0).sum() / n_valid.clamp(min=1)
    finite = valid & torch.isfinite(ratio)
    mean_ratio = (torch.where(finite, ratio, 0.0).sum() / finite.sum().clamp(min=1)).detach()
    mean_share = (torch.where(valid, row_share, 0.0).sum() / n_valid.clamp(min=1)).detach()
    return ReAttentionOutput(loss, mean_ratio, n_valid, active.sum(), mean_share)
