"""ICLM through the real pipeline: Hydra composition, the LightningModule, checkpoints, metrics.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from catlit.methods.iclm import IndependentCausalLM
from catlit.training.run import run
from tests.helpers.runs import FAST, compose_cfg

ACRE = ["data=acre", "data.preset=small", "data.limit=160", "data.eval_batch_size=64"]


def train(tmp_path: Path, *overrides: str):
    cfg = compose_cfg(tmp_path, [*FAST, *ACRE, *overrides])
    _, metrics = run(cfg)
    return metrics, Path(cfg.paths.output_dir)


def logged(run_dir: Path, key: str) -> list[float]:
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with metrics_csv.open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


@pytest.mark.slow
def test_iclm_toy_run_learns_routes_by_source_and_keeps_every_codeword(tmp_path):
    metrics, run_dir = train(tmp_path, "method=iclm", "trainer.max_epochs=4", "data.batch_size=8")
    loss = logged(run_dir, "train/loss")
    assert sum(loss[-5:]) / 5 < 0.5 * sum(loss[:5]) / 5  # the loss falls
    for split in ("iid", "compositional", "systematic"):
        assert 0.0 <= metrics[f"test/{split}/acc"] <= 1.0
        assert metrics[f"test/{split}/codebook_usage"] == 1.0  # no collapse onto one codeword
        assert metrics[f"test/{split}/routing_purity"] > metrics[f"test/{split}/routing_chance"] + 0.2
    for term in (
        "train/vq",
        "train/mi_0",
        "train/mi_1",
        "train/ce_inv",
        "train/ce_dom",
        "train/codebook_usage",
    ):
        assert logged(run_dir, term), term
    assert logged(run_dir, "train/routing_purity") and logged(run_dir, "val/iid/routing_purity")
    assert not any(k.startswith("probe/") for k in metrics)  # several adapters: attention is not probed

    # the checkpoint holds the adapters and the method's own weights, never the frozen base
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {"method.router.codebook.weight", "method.head.weight", "method.norm.running_mean"} <= set(state)
    assert all("lora_" in k for k in state if k.startswith("model."))
    adapters = ("router", "invariant", "domain_0", "domain_1")
    assert all(any(f".{name}." in k for k in state) for name in adapters)

    # the saved model folder (the weights test used: the best epoch) reloads on the run's base
    method, _ = IndependentCausalLM.from_pretrained(run_dir / "model", _base(run_dir))
    saved = json.loads((run_dir / "model" / "iclm.json").read_text())
    assert saved["aggregation"] == "norm_hidden_states" and method.router.codes == 2
    best = torch.load(run_dir / "checkpoints" / f"best-epoch{_best(run_dir)}.ckpt", weights_only=False)
    for key in ("router.codebook.weight", "head.weight", "norm.running_var"):
        assert torch.equal(method.state_dict()[key], best["state_dict"][f"method.{key}"]), key

    # testing from the checkpoint, without training, reproduces the figures
    again, _ = train(
        tmp_path / "again",
        "method=iclm",
        "train=false",  # the val metric a sweep optimises is not produced: no error for a test-only run
        f"ckpt_path={run_dir}/checkpoints/best-epoch{_best(run_dir)}.ckpt",
    )
    for split in ("iid", "compositional", "systematic"):
        assert again[f"test/{split}/acc"] == metrics[f"test/{split}/acc"]


def _base(run_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run_dir / "base_model")


def _best(run_dir: Path) -> str:
    (best,) = (run_dir / "checkpoints").glob("best-epoch*.ckpt")
    return best.stem.removeprefix("best-epoch")


@pytest.mark.parametrize("method", ["baseline", "cat", "lora", "iclm_no_invariant", "poly", "lora_matched"])
def test_every_method_runs_on_acre(tmp_path, method):
    metrics, run_dir = train(tmp_path, f"method={method}", "data.limit=40")
    assert {"test/iid/acc", "test/compositional/acc", "test/systematic/acc"} <= set(metrics)
    if method == "cat":
        assert logged(run_dir, "train/attn")  # the blicket trials are the answer's causes
    if method == "lora_matched":
        assert metrics["train/lora_rank"] > 8  # as many parameters as ICLM trains


def test_the_benchmark_preset_reports_accuracy_per_query_type(tmp_path):
    metrics, _ = train(tmp_path, "method=lora", "data.preset=acre", "data.limit=32")
    per_type = {k: v for k, v in metrics.items() if "/by_query_type/" in k}
    splits = {k.split("/")[1] for k in per_type}
    assert splits == {"iid", "compositional", "systematic"} and all(0 <= v <= 1 for v in per_type.values())
    types = {k.split("/")[3] for k in per_type}
    assert types <= {"direct", "indirect", "screen_off", "potential"} and len(types) >= 3


def test_lora_method_trains_one_adapter_on_the_frozen_model(tmp_path):
    _, run_dir = train(tmp_path, "method=lora", "data.limit=40")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state)
    assert {k.split(".")[-2] for k in state} == {"default"}


@pytest.mark.parametrize("method", ["iclm", "lora"])
def test_a_method_that_builds_adapters_refuses_model_lora(tmp_path, method):
    cfg = compose_cfg(tmp_path, [*FAST, *ACRE, f"method={method}", "model.lora.enabled=true"])
    with pytest.raises(ValueError, match="model.lora.enabled=false"):
        run(cfg)


def test_every_iclm_option_can_be_set_from_the_command_line(tmp_path):
    """Each field of ICLMConfig is a key of conf/method/iclm.yaml, so `method.<key>=...` overrides it."""
    from dataclasses import fields

    from catlit.methods.iclm.config import ICLMConfig

    overrides = ["method=iclm", "method.restart_after=20", "method.mi_reduce=topk_shared"]
    overrides += ["method.mi_positions=answer", "method.norm_padding=true"]
    cfg = compose_cfg(tmp_path, overrides)
    assert cfg.method.restart_after == 20 and cfg.method.mi_reduce == "topk_shared"
    assert cfg.method.mi_positions == "answer" and cfg.method.norm_padding is True
    missing = {f.name for f in fields(ICLMConfig)} - set(cfg.method)
    assert not missing, f"conf/method/iclm.yaml lacks {sorted(missing)}"
