"""Several named LoRA adapters on one frozen base, switched per forward pass without touching
which of them train.

peft's `set_adapter` also sets `requires_grad` (only the active adapter trains), so switching with it
inside one training step would freeze the adapters used earlier in the step. `active_adapter` only
changes which adapter the LoRA layers apply; autograd records each forward's graph with the adapter
that was active then, so every adapter gets its own gradient.
"""

from __future__ import annotations

import contextlib

from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from catlit.models.lora import lora_config, refuse_second_lora_owner


def add_named_adapters(
    model, names: list[str], r: int, alpha: int, dropout: float, target_modules, owner: str = "method"
):
    """A peft model with one LoRA adapter per name, all trainable, on the frozen `model`."""
    refuse_second_lora_owner(model, owner)
    peft_model = get_peft_model(model, lora_config(r, alpha, dropout, target_modules), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, lora_config(r, alpha, dropout, target_modules))
    for name, param in peft_model.named_parameters():
        param.requires_grad = "lora_" in name  # every adapter trains; the base stays frozen
    return peft_model


def tuner_layers(model) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def active_adapter(model, name: str | None):
    """Apply only adapter `name` (None: none, the bare base) inside the block; trainability untouched."""
    layers = tuner_layers(model)
    saved = [(layer._active_adapter, layer._disable_adapters) for layer in layers]
    try:
        for layer in layers:
            if name is None:
                layer._disable_adapters = True
            else:
                layer._active_adapter = [name]
        yield
    finally:
        for layer, (active, disabled) in zip(layers, saved):
            layer._active_adapter, layer._disable_adapters = active, disabled
