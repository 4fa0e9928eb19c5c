"""Every entry point on every family: `method=cat`, `method=lora`, `method=iclm` and `trace.py` on tiny
GPT-2, Llama, Qwen2 and Mistral checkpoints, each read through the one architecture table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catlit.models.architectures import ARCHITECTURES
from catlit.tracing.run import run as trace_run
from tests.helpers.models import FAMILIES, save_tiny_checkpoint
from tests.helpers.runs import compose_cfg, logged_columns, train

DATA = ["+data.params.n_train=48", "+data.params.n_val=8", "+data.params.n_iid=8", "+data.params.n_ood=8"]


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory, stg_corpus_module) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param) / "model"
    return request.param, save_tiny_checkpoint(folder, request.param, stg_corpus_module)


@pytest.fixture(scope="module")
def stg_corpus_module() -> list[str]:
    from catlit.data.sources import STGSource

    return [ex.text for ex in STGSource("toy", seed=0, params={"n_train": 200}).load().train]


def run_method(tmp_path: Path, folder: Path, method: str, *extra: str):
    overrides = ["model=pretrained", f"model.path={folder}", f"method={method}", "data.max_new_tokens=4"]
    return train(tmp_path, *overrides, *DATA, *extra, small=False)


def test_cat_trains_on_every_family(tmp_path, checkpoint):
    _, folder = checkpoint
    _, _, metrics, run_dir = run_method(tmp_path, folder, "cat", "method.layers=last:1")
    assert {"train/attn_ratio", "train/attn_share"} <= logged_columns(run_dir)  # the capture saw the layer
    assert 0.0 <= metrics["test/ood/acc"] <= 1.0 and metrics["train/attn_active_steps"] >= 0


def test_lora_trains_the_tables_targets_on_every_family(tmp_path, checkpoint):
    family, folder = checkpoint
    _, _, metrics, run_dir = run_method(tmp_path, folder, "lora")
    adapter = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    arch = ARCHITECTURES[family]
    assert set(adapter["target_modules"]) == {*arch.attn_in, arch.attn_out}
    assert "test/iid/acc" in metrics


def test_iclm_trains_on_every_family(tmp_path, checkpoint):
    _, folder = checkpoint
    _, _, metrics, run_dir = run_method(tmp_path, folder, "iclm")
    saved = {p.name for p in (run_dir / "model").iterdir()}
    assert {"iclm.json", "iclm.pt", "router", "invariant", "domain_0", "domain_1"} <= saved
    assert 0.0 < metrics["test/iid/codebook_usage"] <= 1.0


def test_trace_runs_on_every_family(tmp_path, checkpoint):
    _, folder = checkpoint
    overrides = [
        f"model.path={folder}",
        "pairs.loader.n=12",
        "search.epochs=2",
        "select.k=2",
        "baselines.sizes=[1]",
        "baselines.random_draws=1",
        "baselines.methods=[topk,all]",
    ]
    metrics = trace_run(compose_cfg(tmp_path, overrides, config_name="trace"))
    assert "all/k8/effect_train" in metrics  # 2 layers x 4 heads, found through the table
    selection = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert [c["hook"].split(".", 2)[2] for c in selection["components"]] == ["attn.hook_z"] * 2
