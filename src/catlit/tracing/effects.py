"""Effects of an intervention, read from candidate probabilities, and the losses that maximise them.

Every effect is computed from a per-pair score s (of the base run and of the intervened run) and its
change Δ = s_int − s_base:

  odds        s = log p(a) − log p(b)         e = o_int / o_base − 1 = exp(Δ) − 1
              (two candidates; with one-token candidates this is the next-token odds, " he"/" she")
  prob_drop   s = −log p(true object)         e = p_clean / p_int − 1 = exp(Δ) − 1
  logit_diff  s = logit(a) − logit(b)         e = Δ

A multi-token candidate's log p is the mean of its tokens' log probabilities (the log of their
geometric mean). The `inverse` loss, mean 1/(1+e) = mean exp(−Δ), is the paper's; `scaled` is
mean exp(−Δ / u), u = min(1, |mean Δ(all)|): the inverse loss wherever patching every component moves
the score by a unit or more, and otherwise the same loss with the full patch's Δ as the unit, so that a
small effect (a real model's bias, odds × 1.1) is not drowned by penalties sized for large ones.
`pooled` (the default) is exp(−mean Δ / u), the same unit: the pairs' Δ are averaged *before* the
exponential. Per pair, exp(−Δ/u) weighs each pair by how far the patch leaves it behind, so where u is
small and the pairs spread around it (Winogender on SmolLM2: mean Δ(all) 0.03, per-pair Δ from −0.2
to 0.47) the few pairs the patch moves the wrong way decide the whole search (one pair of 35 carries
69% of a step's gradient: benchmarks/pair_deltas.py); pooled, every pair weighs 1/n and the loss
stays bounded in (0, 1], so λ still competes with it as it does with the inverse loss. `negative` is
−e; `relative` is −e / |E(all)|, the mean effect of patching every component (scale-free).
With one-token candidates, Δ of the odds equals Δ of the logit difference (the softmax normaliser
cancels), so 1/(1+e_odds) = exp(−Δ logit diff).
"""

from __future__ import annotations

import torch

EFFECTS = ("odds", "prob_drop", "logit_diff")
LOSSES = ("inverse", "scaled", "pooled", "negative", "relative")
N_CANDIDATES = {"odds": 2, "prob_drop": 1, "logit_diff": 2}


def check(effect: str, loss: str = "inverse") -> None:
    if effect not in EFFECTS:
        raise ValueError(f"effect={effect!r}; choose from {EFFECTS}")
    if loss not in LOSSES:
        raise ValueError(f"search.loss={loss!r}; choose from {LOSSES}")


def candidate_scores(logits: torch.Tensor, batch, positions: torch.Tensor, effect: str) -> torch.Tensor:
    """[n_pairs, n_candidates]: mean log probability (or raw logit, for logit_diff) of each candidate.

    `logits` are [N, K, V] at the K sequence positions listed in `positions` (see `kept_positions`).
    """
    col = torch.searchsorted(positions, batch.score_pos)
    picked = logits[batch.score_seq, col].float()  # [S, V]
    if effect == "logit_diff":
        values = picked.gather(1, batch.score_tok[:, None])[:, 0]
    else:
        values = picked.log_softmax(-1).gather(1, batch.score_tok[:, None])[:, 0]
    shape = (batch.n_pairs, batch.n_cands)
    flat = batch.score_pair * batch.n_cands + batch.score_cand
    total = torch.zeros(shape, dtype=values.dtype, device=values.device).view(-1).index_add(0, flat, values)
    count = (
        torch.zeros(shape, dtype=values.dtype, device=values.device)
        .view(-1)
        .index_add(0, flat, torch.ones_like(values))
    )
    return (total / count.clamp_min(1)).view(shape)


def kept_positions(batch) -> torch.Tensor:
    """The sorted sequence positions whose logits are read (computing only those saves vocab-size work)."""
    return torch.unique(batch.score_pos)


def pair_score(cand: torch.Tensor, effect: str) -> torch.Tensor:
    if cand.shape[1] < N_CANDIDATES[effect]:
        raise ValueError(f"effect={effect} needs {N_CANDIDATES[effect]} candidate(s) per pair")
    if effect == "prob_drop":
        return -cand[:, 0]
    return cand[:, 0] - cand[:, 1]


def effect_of(delta: torch.Tensor, effect: str) -> torch.Tensor:
    return delta if effect == "logit_diff" else torch.expm1(delta)


def effect_loss(delta: torch.Tensor, effect: str, loss: str = "inverse", scale: float = 1.0) -> torch.Tensor:
    """inverse: mean 1/(1+e); scaled: mean exp(−Δ / scale) (scale = min(1, |mean Δ(all)|)); pooled:
    exp(−mean Δ / scale) (the same scale; the mean over the pairs of the call: a search in chunks pools
    the whole batch first, catlit.tracing.search); negative: −mean e;
    relative: −mean e / scale (scale = |E(all)|, so the penalties' λ is a share of the full patch's
    effect, whatever the effect's units)."""
    if loss == "inverse":
        return torch.exp(-delta).mean()
    if loss == "scaled":
        return torch.exp(-delta / scale).mean()
    if loss == "pooled":
        return torch.exp(-delta.mean() / scale)
    value = -effect_of(delta, effect).mean()
    return value / scale if loss == "relative" else value
