"""End-to-end runs of the training pipeline on the composed conf/ tree (real Trainer, real models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from tests.helpers.models import save_tiny_checkpoint
from tests.helpers.runs import ROOT, logged_columns, train


def test_cat_run_writes_metrics_predictions_checkpoints_and_model(tmp_path):
    _, value, metrics, run_dir = train(tmp_path)
    for key in ("val/iid/acc", "val/ood/acc", "test/iid/acc", "test/ood/acc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert value == metrics["val/iid/acc"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/ood/acc"] == metrics["test/ood/acc"]
    preds = [json.loads(line) for line in (run_dir / "predictions" / "ood.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and {"input", "prediction", "target", "correct"} <= set(preds[0])
    assert sum(p["correct"] for p in preds) / 16 == pytest.approx(metrics["test/ood/acc"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))
    assert (run_dir / "config.yaml").read_text().count("preset: toy") == 1
    assert {
        "train/ce",
        "train/attn",
        "train/attn_ratio",
        "train/gamma",
        "probe/attn_ratio",
    } <= logged_columns(run_dir)
    for plot in ("attention_ratio", "attention_example_0", "attention_example_1"):
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
    reloaded = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert reloaded.config.model_type == "llama"
    AutoModelForCausalLM.from_pretrained(run_dir / "base_model")


def test_baseline_runs_without_attention_capture(tmp_path):
    _, _, metrics, run_dir = train(tmp_path, "method=baseline")
    assert "test/ood/acc" in metrics
    columns = logged_columns(run_dir)
    assert "train/ce" in columns and "train/attn" not in columns


def test_eager_capture_and_a_layer_selection_train_too(tmp_path):
    _, _, metrics, run_dir = train(tmp_path / "e", "method.capture=eager")
    assert "test/ood/acc" in metrics and "train/attn" in logged_columns(run_dir)
    _, _, metrics, _ = train(tmp_path / "s", "method.layers=last:1", "method.heads=[0,1]")
    assert "test/ood/acc" in metrics


def test_stg_h_and_released_presets(tmp_path):
    _, _, metrics, _ = train(tmp_path / "h", "data=stg_h")
    assert {"test/iid/acc", "test/ood/acc"} <= set(metrics)
    _, _, metrics, run_dir = train(tmp_path / "r", "data.preset=released")
    assert {"test/iid/acc", "test/ood/acc"} <= set(metrics)
    assert "Smoking" in (run_dir / "predictions" / "iid.jsonl").read_text()
    _, _, metrics, run_dir = train(tmp_path / "hr", "data=stg_h", "data.preset=released")
    assert {"test/iid/acc", "test/ood/acc"} <= set(metrics)
    assert "Meteorological Dispersion" in (run_dir / "predictions" / "ood.jsonl").read_text()


def test_local_llama_checkpoint_with_lora_keeps_adapter_only_checkpoints(tmp_path, stg_corpus):
    folder = save_tiny_checkpoint(tmp_path / "ckpt", "llama", stg_corpus)
    _, _, metrics, run_dir = train(
        tmp_path, "model=pretrained", f"model.path={folder}", "model.lora.enabled=true"
    )
    assert "test/iid/acc" in metrics
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state)
    assert (run_dir / "model" / "adapter_config.json").is_file()
    assert not (run_dir / "model" / "model.safetensors").exists()


def test_resume_from_checkpoint_continues_training(tmp_path):
    _, _, _, first = train(tmp_path / "a")
    last = first / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=False)["global_step"]
    _, _, _, second = train(tmp_path / "b", f"ckpt_path={last}", "trainer.max_epochs=2")
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2 * steps
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        train(tmp_path / "c", f"ckpt_path={tmp_path}/missing.ckpt")


def test_wandb_offline_logger_records_the_run(tmp_path):
    _, _, _, run_dir = train(tmp_path, "logger=wandb")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    images = sorted(p.name for p in runs[0].glob("files/media/images/attention/*.png"))
    assert len(images) == 3, images  # ratio curve + 2 heatmaps, one key each


def tensorboard_scalars(folder: Path) -> dict[str, list[float]]:
    """Every scalar in the TFRecord event files under `folder`, read back from the bytes (length,
    crc, an Event protobuf, crc per record)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[float]] = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


def test_tensorboard_and_mlflow_loggers_record_the_run(tmp_path):
    _, _, metrics, run_dir = train(tmp_path / "tb", "logger=tensorboard", "trainer.log_every_n_steps=1")
    # one writer for the run: a second one, opened for test within the second fit ended in, took the
    # first one's file name and overwrote the training scalars
    assert len(list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert "train/loss" in scalars and all(v == v for v in scalars["train/loss"])  # finite, not NaN
    assert scalars["test/iid/acc"][-1] == pytest.approx(metrics["test/iid/acc"])

    from mlflow.tracking import MlflowClient

    _, _, metrics, run_dir = train(tmp_path / "ml", "logger=mlflow", "trainer.log_every_n_steps=1")
    client = MlflowClient(tracking_uri=f"file:{run_dir / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("train-cat_share-stg-s")
    assert run.data.metrics["test/iid/acc"] == pytest.approx(metrics["test/iid/acc"])
    assert run.data.params["method/name"] == "cat_share" and run.data.tags["sweep"]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2


@pytest.mark.released_data
def test_released_jsonl_files_train_and_score(tmp_path, released_data):
    _, _, metrics, _ = train(
        tmp_path, "data=jsonl", f"paths.data_dir={released_data}", "data.limit=48", small=False
    )
    assert {"val/iid/acc", "test/iid/acc", "test/ood/acc"} <= set(metrics)


def train_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python train.py ...` as a user types it, with runs under tmp_path."""
    args = [
        sys.executable,
        "train.py",
        *overrides,
        "trainer.enable_progress_bar=false",
        f"paths.log_dir={tmp_path}",
    ]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_default_command_learns_the_toy_task(tmp_path):
    """`python train.py` exactly as the README says (but logging to csv): IID accuracy >= 90%."""
    result = train_cli(tmp_path, "logger=csv")
    assert "| test acc |" in result.stdout
    (metrics_file,) = tmp_path.glob("runs/train/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["test/iid/acc"] >= 0.9, metrics
    # the default is catlit's CAT, and the Re-Attention loss acts: on some steps, and moving attention
    assert OmegaConf.load(metrics_file.parent / "config.yaml").method.name == "cat_share"
    assert 0.0 < metrics["train/attn_active_steps"] < 1.0, metrics
    assert metrics["probe/attn_share_end"] > metrics["probe/attn_share_start"] + 0.2, metrics
    assert "L_attn active in " in result.stdout and "attention on causes (probe" in result.stdout


@pytest.mark.slow
def test_multirun_sweep_writes_one_run_per_job(tmp_path):
    train_cli(tmp_path, "-m", "experiment=quick", "method=cat,baseline", "trainer.max_epochs=1")
    (sweep,) = tmp_path.glob("multiruns/quick/*")
    jobs = sorted(sweep.glob("[0-9]*/metrics.json"))
    assert len(jobs) == 2
    methods = sorted(OmegaConf.load(job.parent / "config.yaml").method.name for job in jobs)
    assert methods == ["baseline", "cat"]
