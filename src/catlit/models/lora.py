"""LoRA through peft; target modules default to peft's per-architecture table."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=None) -> LoraConfig:
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        task_type="CAUSAL_LM",
        target_modules=list(target_modules) if target_modules else None,
    )


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=None):
    return get_peft_model(model, lora_config(r, alpha, dropout, target_modules))


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def refuse_second_lora_owner(model, method: str) -> None:
    """LoRA has one owner: the model group (`model.lora`) or a method that builds its own adapters."""
    if is_peft(model):
        raise ValueError(
            f"method={method} builds its own LoRA adapters on the base model: set model.lora.enabled=false "
            "(the method's config holds r, alpha, dropout and target modules)"
        )
