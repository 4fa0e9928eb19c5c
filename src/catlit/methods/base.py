"""The method abstraction: a method may ask the forward pass for more and add loss terms.

The LightningModule stays the same for every method: loss = CE + Σ method terms. A method that needs
to see inside the model (attention statistics, activations, masks over components) says so through
`attn_implementation` and `forward_kwargs`, and reads what it asked for in `losses`.
"""

from __future__ import annotations

import torch


class Method:
    name = "method"
    attn_implementation: str | None = None  # the implementation the capture needs, if any
    needs_causal_mask = False

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    def forward_kwargs(self) -> dict:
        return {}

    def losses(
        self, outputs, batch: dict, progress: float, epoch: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
        """Return (loss terms added to CE, scalars to log)."""
        return {}, {}


class Baseline(Method):
    """Plain answer-only fine-tuning."""

    name = "baseline"
