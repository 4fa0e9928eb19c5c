"""Model and tokenizer construction: the embedded default, local checkpoints, LoRA."""

from catlit.models.factory import build_model

__all__ = ["build_model"]
