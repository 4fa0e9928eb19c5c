"""GGUF checkpoints (llama.cpp's single-file format), read through transformers' GGUF loader.

transformers dequantizes a GGUF file into float weights but keeps the model marked as quantized and
then refuses `save_pretrained` ("quantized with gguf and is not serializable"), which every catlit run
needs (`model/`, `base_model/`). `load_gguf` therefore hands back a plain model: the same architecture
built from the config without its quantization entry, holding the dequantized weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from catlit.errors import ConfigError

GGUF_MAGIC = b"GGUF"


def require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            "reading a GGUF file needs the `gguf` package, which is not installed: pip install gguf "
            '(or pip install -e ".[gguf]")'
        )


def check_gguf_file(path: Path) -> None:
    """A missing or foreign file is named before transformers reads it (its own errors name neither)."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")


def gguf_source(folder: str | Path, gguf_file: str) -> Path:
    """The GGUF file `gguf_file` names: a path, or a name inside the checkpoint folder."""
    path = Path(gguf_file).expanduser()
    return path if path.is_absolute() or path.parent != Path() else Path(folder) / gguf_file


def load_gguf(folder: str, gguf_file: str, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """(plain model, tokenizer) from `gguf_file` in `folder` (a local folder or a hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    require_gguf_package()
    local = gguf_source(folder, gguf_file)
    if Path(folder).is_dir() or local.is_absolute():
        check_gguf_file(local)
        folder, gguf_file = str(local.parent), local.name
    from catlit.models.architectures import ARCHITECTURES

    try:
        kind = AutoConfig.from_pretrained(folder, gguf_file=gguf_file).model_type  # metadata only
        if kind not in ARCHITECTURES:
            raise ConfigError(
                f"GGUF file {gguf_file} holds a model_type={kind!r} model, which catlit's architecture "
                f"table does not know (known: {sorted(ARCHITECTURES)})"
            )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except ConfigError:
        raise
    except (ValueError, KeyError, RuntimeError, EOFError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"GGUF file {gguf_file} in {folder} could not be read (truncated or damaged?): {first}"
        ) from None
    model = plain_copy(quantized, getattr(torch, dtype), attn_implementation)
    model.config.name_or_path = str(folder)
    return model, tokenizer


def plain_copy(quantized, dtype: torch.dtype, attn_implementation: str):
    """The same architecture without the quantizer, holding `quantized`'s (already float) weights."""
    from transformers import AutoModelForCausalLM

    config = quantized.config.__class__.from_dict(
        {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    )
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.to(dtype) for k, v in quantized.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise ValueError(
            f"GGUF weights do not fit the architecture: missing {missing}, unexpected {unexpected}"
        )
    for name, buffer in quantized.named_buffers():  # RoPE's inverse frequencies are not in the state dict
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        if getattr(module, leaf).is_meta:
            persistent = leaf not in module._non_persistent_buffers_set
            module.register_buffer(leaf, buffer.clone(), persistent=persistent)
    model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"GGUF weights do not fill the architecture: {left[:5]} have no values")
    model.generation_config = quantized.generation_config
    return model.eval()


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another (the output head of tied embeddings)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied.keys())
