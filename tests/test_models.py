"""Model construction: the embedded default round-trips through from_pretrained; local checkpoints
of three architectures load through the Auto classes; hub ids fail clearly; LoRA trains adapters only."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from catlit.models import build_model
from catlit.models.embedded import train_tokenizer
from catlit.models.loading import load_pretrained
from tests.helpers.models import save_tiny_checkpoint

ARCH = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def model_cfg(**kw):
    base = {
        "path": None,
        "dtype": "float32",
        "attn_implementation": "sdpa",
        "vocab_size": 512,
        "arch": ARCH,
        "gradient_checkpointing": False,
        "lora": {"enabled": False, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None},
    }
    return OmegaConf.create({**base, **kw})


def test_embedded_model_is_saved_and_reloads_identically(tmp_path, stg_corpus):
    model, tok = build_model(model_cfg(), lambda: stg_corpus, save_dir=tmp_path / "base")
    assert model.config.model_type == "llama" and len(tok) <= 512
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "base")
    ids = tok(stg_corpus[0], return_tensors="pt")["input_ids"]
    assert tok2(stg_corpus[0])["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids).logits, again.eval()(ids).logits, atol=1e-6)


def test_embedded_tokenizer_is_deterministic(stg_corpus):
    a, b = train_tokenizer(stg_corpus), train_tokenizer(list(reversed(stg_corpus)))
    assert a.get_vocab() == b.get_vocab()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_local_checkpoints_load_through_auto_classes(tmp_path, stg_corpus, kind):
    folder = save_tiny_checkpoint(tmp_path / kind, kind, stg_corpus)
    model, tok = load_pretrained(folder, attn_implementation="eager")
    assert tok.pad_token_id is not None and tok.is_fast
    assert model.config._attn_implementation == "eager"
    out = model(**tok(["Smoking: 3 Answer:"], return_tensors="pt"), output_attentions=True)
    assert len(out.attentions) == 2


def test_hub_ids_and_missing_folders_fail_clearly(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        FileNotFoundError, match="not in the Hugging Face cache .*hf download meta-llama/Llama-3.2-1B"
    ):
        load_pretrained("meta-llama/Llama-3.2-1B")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "kind,targets",
    [
        ("llama", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
        ("gpt2", {"attn.c_attn", "attn.c_proj"}),  # not the MLP's c_proj
    ],
)
def test_lora_trains_only_adapters_on_the_architecture_tables_targets(tmp_path, stg_corpus, kind, targets):
    folder = save_tiny_checkpoint(tmp_path / kind, kind, stg_corpus)
    cfg = model_cfg(path=str(folder), lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0})
    model, _ = build_model(cfg, lambda: [])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {".".join(n.split(".lora_")[0].split(".")[-2:]) for n in trainable} == targets


def test_gradient_checkpointing_is_non_reentrant(stg_corpus):
    model, _ = build_model(model_cfg(gradient_checkpointing=True), lambda: stg_corpus)
    assert model.is_activation_checkpointing
    layer = model.model.layers[0]
    assert layer._gradient_checkpointing_func.keywords.get("use_reentrant") is False


def test_loaded_checkpoints_start_in_train_mode(tmp_path, stg_corpus):
    folder = save_tiny_checkpoint(tmp_path / "llama", "llama", stg_corpus)
    cfg = model_cfg(path=str(folder), lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1})
    model, _ = build_model(cfg, lambda: [])
    assert all(m.training for m in model.modules())
