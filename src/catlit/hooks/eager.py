"""The full attention maps of any model, whatever attention implementation it was built with."""

from __future__ import annotations

import torch

from catlit.hooks.interface import attention_implementation


def eager_attention(model, batch: dict) -> torch.Tensor:
    """Mean attention over layers and heads [B, T, T]; the model runs eager attention, in eval mode,
    for this one pass only."""
    was_training = model.training
    model.eval()
    try:
        with attention_implementation(model, "eager"), torch.no_grad():
            out = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True
            )
        return torch.stack([a.float().mean(1) for a in out.attentions]).mean(0)
    finally:
        model.train(was_training)
