"""Tiny random models, one factory per family of catlit's architecture table, and real HF checkpoint
folders of them (a tokenizer trained on the task text beside the weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from catlit.models.embedded import train_tokenizer

VOCAB = 50
FAMILIES = ("gpt2", "llama", "qwen2", "mistral")  # the four every entry point is run on
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}


def tiny_config(
    family: str,
    layers: int = 2,
    heads: int = 4,
    width: int = 32,
    tie: bool = True,
    kv_heads: int | None = None,
    vocab: int = VOCAB,
    positions: int = 64,
    **extra,
):
    """A tiny config of `family`; Llama-like families use grouped-query attention unless `kv_heads`."""
    if family == "gpt2":
        settings = {
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": 0,
            "eos_token_id": 0,
        }
        return GPT2Config(
            n_embd=width,
            n_layer=layers,
            n_head=heads,
            n_positions=positions,
            vocab_size=vocab,
            tie_word_embeddings=tie,
            **{**settings, **extra},
        )
    return CONFIGS[family](
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads // 2,
        max_position_embeddings=positions,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        **extra,
    )


def tiny_model(family: str, seed: int = 0, **kw):
    """A frozen tiny model in eval mode (for tracing and exactness tests)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw), attn_implementation="sdpa")
    model.eval().requires_grad_(False)
    return model


def tiny_llama(attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    """A seeded trainable tiny Llama: every call gives the same weights."""
    torch.manual_seed(0)
    config = tiny_config("llama", vocab=50, tie=False, positions=64)
    return LlamaForCausalLM._from_config(config, attn_implementation=attn_implementation)


def save_tiny_checkpoint(folder: Path, family: str, corpus: list[str], seed: int = 0, **kw) -> Path:
    """A real HF checkpoint of `family` written with save_pretrained, with a byte-level BPE tokenizer
    trained on `corpus`. GPT-2 ships without a pad token, as its real checkpoints do."""
    tok = train_tokenizer(corpus, 300)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    if family == "gpt2":
        tok.pad_token = None
    else:
        ids["pad_token_id"] = tok.pad_token_id
    defaults = {"width": 32, "heads": 4, "layers": 2, "positions": 256, "tie": True}
    torch.manual_seed(seed)
    config = tiny_config(family, vocab=len(tok), **{**defaults, **ids, **kw})
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
