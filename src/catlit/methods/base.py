"""The method abstraction: a method may ask the forward pass for more and add loss terms.

The LightningModule is the same for every method: loss = CE + Σ method terms. A method that needs to
see inside the model (attention statistics, activations, masks over components) says which attention
implementation it needs, hooks into the model once in `setup`, prepares each batch in
`before_forward`, and reads what it asked for in `losses`.
"""

from __future__ import annotations

import torch


class Method:
    name = "method"
    needs_causal_mask = False

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    def attn_implementation(self, requested: str) -> str:
        """The attention implementation the model must be built with, given the one configured."""
        return requested

    def setup(self, model) -> None:
        """Called once with the (possibly peft-wrapped) model before training."""

    def before_forward(self, batch: dict, training: bool) -> None:
        """Called before every forward pass of the module (training or evaluation)."""

    def forward_kwargs(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        """What the method learned outside the model (saved in checkpoints, restored on resume)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict[str, float]:
        """Figures for the run's metrics.json once training ends (e.g. how often a loss term acted)."""
        return {}

    def losses(
        self, outputs, batch: dict, progress: float, epoch: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
        """Return (loss terms added to CE, scalars to log)."""
        return {}, {}


class Baseline(Method):
    """Plain answer-only fine-tuning."""

    name = "baseline"
