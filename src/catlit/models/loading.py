"""Loading a real checkpoint from a local folder through the Auto classes (no hub access here)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def check_local(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    hint = (
        "it looks like a hub id; catlit never downloads (there may be no network): download the "
        "checkpoint elsewhere and set model.path to its folder"
        if "/" in str(path) and not str(path).startswith((".", "/", "~"))
        else "no such folder"
    )
    raise FileNotFoundError(f"model.path={str(path)!r} is not a local checkpoint folder: {hint}")


def load_pretrained(path: str | Path, dtype: str = "float32", attn_implementation: str = "sdpa"):
    folder = check_local(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
    )
    if tokenizer.pad_token_id is None:  # Llama/GPT-2 checkpoints ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
