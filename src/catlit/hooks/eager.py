"""The full attention maps of any model, whatever attention implementation it was built with."""

from __future__ import annotations

import torch


def eager_attention(model, batch: dict) -> torch.Tensor:
    """Mean attention over layers and heads [B, T, T], whatever implementation the model trains with."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = base.config._attn_implementation
    was_training = model.training
    base.set_attn_implementation("eager")
    model.eval()
    try:
        with torch.no_grad():
            out = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True
            )
        return torch.stack([a.float().mean(1) for a in out.attentions]).mean(0)
    finally:
        base.set_attn_implementation(previous)
        model.train(was_training)
