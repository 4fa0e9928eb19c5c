"""Which positions ICLM reads: the answer positions its heads run at, and the tokens routing reads."""

from __future__ import annotations

import torch

# the answer positions are every method's (the answer-only loss); ICLM's heads run at them too
from catlit.methods.answer_loss import answer_positions, next_tokens

__all__ = ["answer_positions", "next_tokens", "position_ids", "routed_tokens"]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left- and right-padded rows agree."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def routed_tokens(mask: torch.Tensor, mask_padding: bool, prompt: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens routing reads: the real ones (every one with mask_padding=false), and of those only
    the `prompt` positions where given."""
    routed = mask.bool() if mask_padding else torch.ones_like(mask, dtype=torch.bool)
    return routed if prompt is None else routed & prompt
