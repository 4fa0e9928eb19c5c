"""Named model presets and hub ids, as a user types them: `python train.py model=llama data=stg` against
a Hugging Face cache (offline), a hub on 127.0.0.1 (online), or neither (one error line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catlit.data.sources import STGSource
from catlit.models.architectures import ARCHITECTURES
from tests.helpers.hub import HubServer, fill_cache
from tests.helpers.models import save_tiny_checkpoint
from tests.helpers.runs import ROOT, compose_cfg

PRESETS = {  # preset -> (hub id, family)
    "llama": ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
    "llama1b": ("meta-llama/Llama-3.2-1B-Instruct", "llama"),
    "tinyllama": ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llama"),
    "qwen": ("Qwen/Qwen2.5-1.5B-Instruct", "qwen2"),
    "gpt2": ("gpt2", "gpt2"),
    "mistral": ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
}
LLAMA3_PAD = "<|finetune_right_pad_id|>"
QUICK = ["data=stg", "experiment=quick", "data.limit=32", "trainer.max_epochs=1", "data.max_new_tokens=4"]


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """A tiny random model of each preset's family, saved as a checkpoint folder."""
    corpus = [ex.text for ex in STGSource("toy", seed=0, params={"n_train": 200}).load().train]
    folders = {}
    for preset, (_, family) in PRESETS.items():
        folder = save_tiny_checkpoint(root / preset, family, corpus)
        if preset.startswith("llama"):  # Llama 3's tokenizer holds a reserved padding token
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder)
            tok.add_special_tokens({"additional_special_tokens": [LLAMA3_PAD]})
            tok.save_pretrained(folder)
        folders[preset] = folder
    return folders


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("presets"))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, checkpoints) -> Path:
    """An HF hub cache holding every preset's tiny model under the preset's real hub id."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    for preset, folder in checkpoints.items():
        fill_cache(cache, PRESETS[preset][0], folder)
    return cache


def run_cli(script: str, tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_MODE": "offline", **env}
    cmd = [sys.executable, script, f"paths.log_dir={tmp_path}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def only_run(tmp_path: Path, task: str) -> Path:
    (run_dir,) = (tmp_path / "runs" / task).iterdir()
    return run_dir


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_names_its_hub_id_family_dtype_and_lora(tmp_path, preset):
    cfg = compose_cfg(tmp_path, [f"model={preset}"])
    hub_id, family = PRESETS[preset]
    assert cfg.model.path == hub_id and cfg.model.family == family and family in ARCHITECTURES
    assert cfg.model.dtype == ("float32" if preset == "gpt2" else "bfloat16")
    assert cfg.model.lora.enabled == (False if preset == "gpt2" else "auto")
    assert cfg.model.tokenizer.pad_token == (LLAMA3_PAD if preset.startswith("llama") else None)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["llama", "qwen", "gpt2", "mistral"])
def test_the_users_command_trains_a_preset_offline_from_the_hf_cache(tmp_path, hub_cache, preset):
    result = run_cli(
        "train.py",
        tmp_path,
        {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)},
        f"model={preset}",
        *QUICK,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run(tmp_path, "quick")
    assert "test/ood/acc" in json.loads((run_dir / "metrics.json").read_text())
    config = json.loads(
        (run_dir / "model" / ("config.json" if preset == "gpt2" else "adapter_config.json")).read_text()
    )
    if preset == "gpt2":  # full fine-tuning: the whole model is saved
        assert config["model_type"] == "gpt2"
    else:  # LoRA on the family's attention projections, over the hub model
        assert config["base_model_name_or_path"] == PRESETS[preset][0]
        assert config["r"] == 16 and len(config["target_modules"]) == 4
    tokenizer = json.loads((run_dir / "model" / "tokenizer_config.json").read_text())
    if preset == "llama":
        assert tokenizer["pad_token"] == LLAMA3_PAD


@pytest.mark.slow
def test_trace_and_iclm_resolve_a_preset_the_same_way(tmp_path, hub_cache):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    iclm = run_cli("train.py", tmp_path, env, "model=llama", "method=iclm", *QUICK)
    assert iclm.returncode == 0, iclm.stderr[-3000:]
    # the preset's LoRA is `auto`: ICLM builds its own adapters, so model.lora stays off
    saved = {p.name for p in (only_run(tmp_path, "quick") / "model").iterdir()}
    assert {"iclm.json", "router", "invariant"} <= saved and "adapter_config.json" not in saved
    trace = run_cli(
        "trace.py", tmp_path, env, "model=llama", "pairs.loader.n=12", "search.epochs=2", "select.k=2",
        "baselines.methods=[all]", "baselines.sizes=[1]",
    )  # fmt: skip
    assert trace.returncode == 0, trace.stderr[-3000:]
    selection = json.loads((only_run(tmp_path, "trace") / "selection.json").read_text())
    assert selection["model"] == PRESETS["llama"][0] and selection["size"] == 2


def test_a_hub_id_offline_and_not_cached_is_one_error_line(tmp_path):
    result = run_cli(
        "train.py", tmp_path, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}, "model=llama"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "meta-llama/Llama-3.1-8B-Instruct" in line and str(tmp_path / "empty") in line
    assert "hf download meta-llama/Llama-3.1-8B-Instruct" in line


@pytest.mark.slow
def test_online_a_hub_id_is_downloaded_into_the_cache_then_reused(tmp_path, checkpoints):
    cache = tmp_path / "cache"
    with HubServer({"gpt2": checkpoints["gpt2"]}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache)}
        result = run_cli("train.py", tmp_path / "a", env, "model=gpt2", *QUICK)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "GET /gpt2/resolve/" in "\n".join(hub.requests)  # fetched from the hub ...
    assert list(cache.glob("models--gpt2/snapshots/*/model.safetensors"))  # ... into the cache
    load = "from catlit.models.loading import load_pretrained as f; print(type(f('gpt2')[0]).__name__)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    again = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300)
    assert again.stdout.strip() == "GPT2LMHeadModel", again.stderr[-3000:]  # found there with the hub gone


def test_a_preset_refuses_a_checkpoint_of_another_family(tmp_path, checkpoints):
    from catlit.models.loading import load_pretrained

    with pytest.raises(ValueError, match="model.family='qwen2' but the checkpoint .* is model_type='llama'"):
        load_pretrained(checkpoints["llama"], family="qwen2")


def test_a_folder_that_is_not_a_checkpoint_says_what_it_lacks(tmp_path):
    from catlit.models.loading import load_pretrained

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a folder but not a checkpoint: it has no config.json"):
        load_pretrained(tmp_path)


# ---- SmolLM2: the HF cache first, then the copy `catlit-fetch` converted, then one error line -----
def test_smollm2_names_its_hub_id_family_and_lora(tmp_path):
    cfg = compose_cfg(tmp_path, ["model=smollm2"])
    assert cfg.model.path == "HuggingFaceTB/SmolLM2-135M-Instruct" and cfg.model.family == "llama"
    assert cfg.model.lora.enabled == "auto" and cfg.model.lora.r == 16 and cfg.model.gguf_file is None


def test_a_hub_id_resolves_to_the_cache_then_the_fetched_copy_then_says_how_to_fetch(
    tmp_path, monkeypatch, checkpoints, capsys
):
    import shutil

    from catlit.models import fetch
    from catlit.models.loading import resolve

    hub_id = fetch.SOURCES["smollm2"].hub_id
    monkeypatch.setenv("CATLIT_CACHE", str(tmp_path / "catlit"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="or, from the package index alone, `catlit-fetch smollm2`"):
        resolve(hub_id)
    copy = fetch.folder_of("smollm2")  # a complete fetched copy (a tiny llama, with its manifest)
    shutil.copytree(checkpoints["llama"], copy)
    fetch.write_manifest(copy, hub_id=hub_id)
    assert resolve(hub_id) == str(copy)
    assert "not in the Hugging Face cache; using the copy `catlit-fetch` converted" in capsys.readouterr().out
    (copy / "model.safetensors").write_bytes(b"cut")  # a damaged copy is not taken
    with pytest.raises(FileNotFoundError, match="catlit-fetch smollm2"):
        resolve(hub_id)
    hub = tmp_path / "hub"  # and the Hugging Face cache comes first
    fill_cache(hub, hub_id, checkpoints["llama"])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    assert resolve(hub_id) == hub_id


def test_a_truncated_file_in_the_hf_cache_is_named_with_how_to_fetch_it_again(
    tmp_path, monkeypatch, checkpoints
):
    from catlit.models.loading import load_pretrained

    snapshot = fill_cache(tmp_path / "hub", "gpt2", checkpoints["gpt2"])
    weights = snapshot / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        ValueError,
        match=r"models--gpt2/snapshots/\w+/model.safetensors is truncated .*; download it again: "
        r"`hf download gpt2 --force-download`",
    ):
        load_pretrained("gpt2")
