"""LoRA through peft, one way for everything that trains adapters: `model.lora` (any method) and the
methods that build their own (`method=lora`, ICLM's modules) all take the `adapter` config group
(`conf/adapter/lora.yaml`: r, alpha, dropout, target_modules).

`target_modules` null means the architecture table's default for the model's family (its attention
projections); entries may be role names of the table (`attn_in`, `attn_out`, `attention`, `mlp_in`,
`mlp_out`, `mlp`, `all`) or module names, matched by peft as suffixes of the full module paths.

Several named adapters can share one frozen base (`add_named_adapters`) and be switched per forward
pass with `active_adapter`, which leaves trainability alone: peft's `set_adapter` also sets
`requires_grad` (only the active adapter trains), so switching with it inside one training step would
freeze the adapters used earlier in the step. Autograd records each forward's graph with the adapter
that was active then, so every adapter gets its own gradient. Activation checkpointing reruns each
layer's forward during the backward, when another adapter may be active: `AdapterCheckpointContext`
gives that rerun the adapter state its forward had (`catlit.models.factory.enable_checkpointing`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from catlit.models.architectures import lora_target_modules


@dataclass(frozen=True)
class AdapterConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: the architecture table's default

    def to_dict(self) -> dict:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out


def adapter_config(cfg: AdapterConfig | Mapping | None) -> AdapterConfig:
    """An `adapter` config node (a `model.lora` node may also hold `enabled`) as an AdapterConfig."""
    if isinstance(cfg, AdapterConfig):
        return cfg
    values = {k: v for k, v in dict(cfg or {}).items() if k in AdapterConfig.__dataclass_fields__}
    targets = values.get("target_modules")
    values["target_modules"] = tuple(str(t) for t in targets) if targets else None
    return AdapterConfig(**values)


def peft_config(model, adapter: AdapterConfig) -> LoraConfig:
    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        task_type="CAUSAL_LM",
        target_modules=lora_target_modules(model, adapter.target_modules),
    )


def parameters_per_rank(model, adapter: AdapterConfig | Mapping | None = None) -> int:
    """Trainable parameters of one LoRA adapter of rank 1 on `model`'s target modules (in + out per
    module): an adapter of rank r trains r times as many."""
    from catlit.models.architectures import in_features

    targets = lora_target_modules(model, adapter_config(adapter).target_modules)
    total = 0
    for name, module in model.named_modules():
        if any(name == t or name.endswith(f".{t}") for t in targets) and hasattr(module, "weight"):
            out = module.weight.shape[1 if not hasattr(module, "in_features") else 0]
            total += in_features(module) + int(out)
    return total


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def refuse_second_lora_owner(model, owner: str) -> None:
    """LoRA has one owner: the model group (`model.lora`) or a method that builds its own adapters."""
    if is_peft(model):
        raise ValueError(
            f"method={owner} builds its own LoRA adapters on the base model: set model.lora.enabled=false "
            "(the method's `adapter` holds r, alpha, dropout and target modules)"
        )


def apply_adapter(model, adapter: AdapterConfig | Mapping | None = None, owner: str | None = None):
    """One LoRA adapter on the frozen `model` (only the adapter trains)."""
    if owner:
        refuse_second_lora_owner(model, owner)
    return get_peft_model(model, peft_config(model, adapter_config(adapter)))


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=None):
    return apply_adapter(
        model, AdapterConfig(r, alpha, dropout, tuple(target_modules) if target_modules else None)
    )


def add_named_adapters(
    model, names: list[str], adapter: AdapterConfig | Mapping | None, owner: str = "method"
):
    """A peft model with one LoRA adapter per name, all trainable, on the frozen `model`."""
    refuse_second_lora_owner(model, owner)
    config = peft_config(model, adapter_config(adapter))
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, peft_config(model, adapter_config(adapter)))
    for name, param in peft_model.named_parameters():
        param.requires_grad = "lora_" in name  # every adapter trains; the base stays frozen
    return peft_model


def tuner_layers(model) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


class AdapterCheckpointContext:
    """`context_fn` for a non-reentrant `torch.utils.checkpoint`: called at each checkpointed forward,
    it records which adapter every LoRA layer applies, and the recomputation in the backward runs
    under that record (without it, a layer rerun after an adapter switch would compute the gradient
    of the adapter set last). The model's LoRA layers are found once they exist."""

    def __init__(self, model):
        self.model = model
        self.layers: list[BaseTunerLayer] = []

    def __call__(self):
        if not self.layers:
            self.layers = tuner_layers(self.model)
        state = [(layer._active_adapter, layer._disable_adapters) for layer in self.layers]
        return contextlib.nullcontext(), _adapter_state(self.layers, state)


@contextlib.contextmanager
def _adapter_state(layers: list[BaseTunerLayer], state: list) -> Iterator[None]:
    saved = [(layer._active_adapter, layer._disable_adapters) for layer in layers]
    try:
        for layer, (active, disabled) in zip(layers, state):
            layer._active_adapter, layer._disable_adapters = active, disabled
        yield
    finally:
        for layer, (active, disabled) in zip(layers, saved):
            layer._active_adapter, layer._disable_adapters = active, disabled


@contextlib.contextmanager
def active_adapter(model, name: str | None) -> Iterator[None]:
    """Apply only adapter `name` (None: none, the bare base) inside the block; trainability untouched."""
    layers = tuner_layers(model)
    if name is None:
        state = [(layer._active_adapter, True) for layer in layers]
    else:
        state = [([name], layer._disable_adapters) for layer in layers]
    with _adapter_state(layers, state):
        yield
