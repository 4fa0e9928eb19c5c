"""The Re-Attention loss row by row, as the CAT authors' release computes it: the specification that
the vectorised loss (`catlit.methods.reattention`) is tested against and benchmarked with. Slow:
a Python loop over batch x rows."""

from __future__ import annotations

import math

import torch


def reattention_loop(attn, mask, pad, alpha: float, variant: str = "div", share: float = 0.5):
    """(mean loss over valid rows, number of valid rows) from a full map A [B, T, T], mask [B, T, T]
    and key padding [B, T]: means over C_i and N_i (j <= i, non-pad), a loss where r_i < alpha (the
    share variant: where the share of the row's mass on causes is below `share`)."""
    total, valid = attn.new_zeros(()), 0
    batch, t, _ = attn.shape
    for b in range(batch):
        for i in range(t):
            if not mask[b, i].any():
                continue
            causes = [j for j in range(i + 1) if mask[b, i, j] and pad[b, j]]
            others = [j for j in range(i + 1) if not mask[b, i, j] and pad[b, j]]
            if not causes or not others:
                continue
            valid += 1
            a_c, a_n = attn[b, i, causes].mean(), attn[b, i, others].mean()
            if variant == "share":
                s = attn[b, i, causes].sum() / (attn[b, i, causes].sum() + attn[b, i, others].sum())
                if s < share:
                    total = total + math.log(share) - torch.log(s)
                continue
            ratio = a_c / a_n if a_n > 0 else math.inf
            if ratio >= alpha:
                continue
            if variant == "div":
                total = total - torch.log(1 + a_c) / torch.log(1 + a_n)
            elif variant == "div2":
                total = total - torch.log(1 + a_c / (1 + a_n))
            elif variant == "nll":
                total = total - a_c / (a_c + a_n)
            else:
                total = total + torch.clamp(alpha - ratio, min=0)
    return total / max(valid, 1), valid
