"""One entry point from the `model` config group to (model, tokenizer)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from catlit.files import atomic_dir
from catlit.models.embedded import build_embedded
from catlit.models.loading import load_pretrained
from catlit.models.lora import AdapterCheckpointContext, apply_adapter

log = logging.getLogger(__name__)


def build_model(
    cfg,
    corpus: Callable[[], list[str]],
    save_dir: str | Path | None = None,
    method_builds_adapters: bool = False,
):
    """`cfg.path` null builds the embedded default from `corpus()`; otherwise loads a checkpoint (a
    local folder or a hub id, `catlit.models.loading`).

    The embedded model is saved to `save_dir` before any training so the run can be reloaded with
    `model.path=<save_dir>`. `model.lora.enabled`: true, false, or `auto` (the presets' choice: on
    unless the method builds its own adapters, so LoRA keeps one owner).
    """
    attn = cfg.attn_implementation
    if cfg.path:
        tokenizer_options = dict(cfg.get("tokenizer") or {})
        model, tokenizer = load_pretrained(
            cfg.path, cfg.dtype, attn, cfg.get("family"), tokenizer_options, gguf_file=cfg.get("gguf_file")
        )
    else:
        model, tokenizer = build_embedded(corpus(), dict(cfg.arch), cfg.vocab_size)
        model.to(getattr(torch, cfg.dtype))  # model.dtype holds for the embedded default too
        model.set_attn_implementation(attn)
        if save_dir is not None:
            with atomic_dir(Path(save_dir)) as folder:
                model.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
    if cfg.get("gradient_checkpointing"):
        # Non-reentrant: a reentrant checkpoint reruns the forward under no_grad, so anything captured
        # inside a layer (the attention statistics) would carry no gradient.
        enable_checkpointing(model)
    lora = cfg.get("lora")
    if lora and (lora.enabled is True or (lora.enabled == "auto" and not method_builds_adapters)):
        model = apply_adapter(model, lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("LoRA: %d trainable parameters", trainable)
    keep_trainable_in_float32(model)
    model.train()  # from_pretrained returns eval mode, which would silently disable (LoRA) dropout
    log.info("weights: %s, attention %s", cfg.path or "the embedded default (random init)", attn)
    return model, tokenizer


def enable_checkpointing(model, use_reentrant: bool = False) -> None:
    """Activation checkpointing on every decoder layer (transformers' name for it since v5.x, or the
    older one). Non-reentrant unless asked: see `build_model`; non-reentrant recomputation also runs
    with the LoRA adapters its forward had (ICLM switches adapters within a step)."""
    kwargs: dict = {"use_reentrant": use_reentrant}
    if not use_reentrant:
        kwargs["context_fn"] = AdapterCheckpointContext(model)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def keep_trainable_in_float32(model) -> None:
    """Half-precision weights that train get a float32 master copy: an optimizer step on float16 or
    bfloat16 weights rounds small updates away (and float16 overflows). Frozen weights (a LoRA base)
    stay in the configured dtype, which is where the memory is; compute runs in half precision
    through the Trainer's mixed precision (see `half_precision_plugin`)."""
    cast = [p for p in model.parameters() if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16)]
    for param in cast:
        param.data = param.data.float()
    if cast:
        log.info("%d trainable half-precision tensors kept in float32 (master weights)", len(cast))


HALF = {"float16": "16-mixed", "bfloat16": "bf16-mixed"}


def half_precision_plugin(model_dtype: str, trainer_precision) -> str | None:
    """The Trainer precision that computes in `model_dtype` over float32 master weights, when the
    trainer was left at full precision; None where nothing needs to change."""
    if model_dtype in HALF and str(trainer_precision) in ("32", "32-true"):
        return HALF[model_dtype]
    return None
