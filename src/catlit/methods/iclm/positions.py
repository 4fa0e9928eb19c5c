"""Which positions ICLM reads: the answer positions its heads run at, and the tokens routing reads."""

from __future__ import annotations

import torch

from catlit.data.encoding import IGNORE_INDEX


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions whose next token is an answer token."""
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions


def next_tokens(labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[N] the token each selected position predicts."""
    return labels[:, 1:][positions[:, :-1]]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left- and right-padded rows agree."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def routed_tokens(mask: torch.Tensor, mask_padding: bool, prompt: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens routing reads: the real ones (every one with mask_padding=false), and of those only
    the `prompt` positions where given."""
    routed = mask.bool() if mask_padding else torch.ones_like(mask, dtype=torch.bool)
    return routed if prompt is None else routed & prompt
