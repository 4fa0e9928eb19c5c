"""Nothing lost, nothing silent: checkpoints, run directories, non-finite losses, config values,
and one clear line for a mistake."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch

from catlit.errors import ConfigError
from catlit.training.run import run
from tests.helpers.runs import FAST, ROOT, SMALL_DATA, compose_cfg, train


def epoch_of(path) -> int:
    return torch.load(path, weights_only=False)["epoch"]


def test_last_checkpoint_is_the_final_epoch_and_resume_continues_it(tmp_path):
    # selecting the *worst* validation epoch makes the best checkpoint an early one
    _, _, _, run_dir = train(tmp_path, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=min")
    ckpts = run_dir / "checkpoints"
    (best,) = ckpts.glob("best-*.ckpt")
    assert epoch_of(ckpts / "last.ckpt") == 2  # the final epoch (0-based), whatever the best one is
    assert epoch_of(best) < 2, "precondition: the best epoch is not the last"
    steps = torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"]
    assert sorted(p.name for p in ckpts.iterdir()) == sorted([best.name, "last.ckpt"])
    # resuming this run in its own directory is allowed and continues from the last epoch
    train(
        tmp_path,
        f"ckpt_path={ckpts / 'last.ckpt'}",
        "trainer.max_epochs=4",
        "callbacks.model_checkpoint.mode=min",
    )
    assert epoch_of(ckpts / "last.ckpt") == 3
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == steps * 4 // 3


def test_a_run_directory_holding_a_run_is_refused(tmp_path):
    train(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run .*resume it with ckpt_path="):
        train(tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.gamma=-1", "method.gamma=-1: must be a number >= 0"),
        ("method.alpha=abc", "method.alpha='abc': must be a number > 0"),
        ("optimizer.lr=abc", "optimizer.lr='abc': must be a number > 0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be an integer >= 1"),
        ("seed=null", "seed=None: must be an integer"),
    ],
)
def test_config_values_are_checked_before_anything_runs(tmp_path, override, message):
    cfg = compose_cfg(tmp_path, [*FAST, override])
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_a_non_finite_loss_stops_naming_the_step_and_term_or_is_skipped_and_counted(tmp_path):
    with pytest.raises(FloatingPointError, match=r"training step \d+ .*non-finite loss term\(s\) \{'ce'"):
        train(tmp_path / "a", "optimizer.lr=1e30", "scheduler.name=constant")
    _, _, _, run_dir = train(tmp_path / "b", "optimizer.lr=1e30", "scheduler.name=constant", "nonfinite=skip")
    (csv_file,) = run_dir.glob("csv/*/metrics.csv")
    assert "train/nonfinite_skipped" in csv_file.read_text().splitlines()[0]


def test_a_mistake_is_one_line_not_a_traceback(tmp_path):
    args = [sys.executable, "train.py", "model.path=/no/such/model", f"paths.log_dir={tmp_path}", *SMALL_DATA]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: model.path='/no/such/model' is not a local checkpoint folder: no such folder"]


def test_validation_figures_come_from_the_weights_that_test_uses(tmp_path):
    _, _, metrics, run_dir = train(tmp_path, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=min")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    (best,) = [v for k, v in state.items() if "val/iid/acc" in k]
    assert metrics["val/iid/acc"] == pytest.approx(float(best["best_model_score"]))


@pytest.mark.parametrize("data", ["stg", "stg_h", "jsonl", "mawps"])
def test_quick_experiment_works_with_every_kind_of_data(tmp_path, released_data, data):
    from hydra.utils import instantiate

    cfg = compose_cfg(tmp_path, ["experiment=quick", f"data={data}", f"paths.data_dir={released_data}"])
    dm = instantiate(cfg.data, fields=["causal_mask"])
    sizes = dm.splits.sizes()
    assert sizes["train"] == 100 and all(0 < n <= 100 for n in sizes.values()), sizes


def test_non_utf8_bytes_name_file_line_and_column(tmp_path):
    from catlit.data.example import DataError
    from catlit.data.jsonl import read_jsonl

    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"input": "ok", "target": "x"}\n{"input": "caf\xe9", "target": "x"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl:2: not UTF-8 \(byte 0xe9 at column 15\)"):
        read_jsonl(path)


def test_embedded_model_takes_the_configured_dtype_with_float32_master_weights(tmp_path, stg_corpus):
    from catlit.models import build_model

    cfg = compose_cfg(tmp_path, ["model.dtype=bfloat16", "model.lora.enabled=true"])
    model, _ = build_model(cfg.model, lambda: stg_corpus)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}  # the base, where the memory is, in the configured dtype
    assert trainable == {torch.float32}  # what the optimizer updates: float32 master weights


def test_half_precision_trains_through_mixed_precision_not_raw_half_weights(tmp_path, caplog):
    # raw float16 parameters went non-finite within 9 steps; 12 steps here must stay finite
    with caplog.at_level("WARNING", logger="catlit.training.run"):
        _, _, _, run_dir = train(tmp_path, "model.dtype=float16", "trainer.max_epochs=3")
    assert "training with trainer.precision=16-mixed" in caplog.text
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    losses = logged_losses(run_dir)
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def logged_losses(run_dir) -> list[float]:
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with metrics_csv.open() as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]


def test_rows_that_cannot_train_are_dropped_and_counted(tmp_path, stg_corpus, caplog):
    import logging

    from catlit.data.encoding import ExampleEncoder
    from catlit.data.example import CausalLink, Example
    from catlit.models.embedded import train_tokenizer

    tok = train_tokenizer(stg_corpus)
    long_prompt = Example("Smoking: 9 " * 40 + "Answer: ", "High Risk", origin="f:1")
    cut_answer = Example("Smoking: 9 " * 5 + "Answer: ", "Low Risk " * 30 + "\n#### High Risk", origin="f:2")
    empty = Example("Smoking: 9 Answer: ", "  ", origin="f:3")
    good = Example("Smoking: 9 Answer: ", "High Risk", (CausalLink("High Risk", ("Smoking: 9",)),), "f:4")
    with pytest.raises(ValueError, match="f:1: prompt is .* data.too_long=skip"):
        ExampleEncoder(tok, max_length=64).encode(long_prompt)
    encoder = ExampleEncoder(tok, max_length=64, too_long="skip", training=True)
    kept = [e for e in (long_prompt, cut_answer, empty, good) if encoder.encode(e) is not None]
    assert kept == [good]
    c = encoder.coverage.counts
    assert (c["examples_too_long"], c["answers_truncated"], c["empty_target"]) == (1, 1, 1)
    with caplog.at_level(logging.WARNING):
        encoder.log_coverage("train")
    for reason in ("prompt alone reaches max_length", "answer cut away by max_length", "empty target"):
        assert f"1 row(s) dropped: {reason}" in caplog.text
    # outside training a cut answer does not matter (the prompt is what is scored)
    assert ExampleEncoder(tok, max_length=64).encode(cut_answer) is not None


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    """A colleague reads a run's metrics.json, model/ and the fetched model as they read any file the
    user wrote: the temporary file's 0600 and folder's 0700 are not what is left behind."""
    import os

    from catlit.files import atomic_dir, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as folder:
            (folder / "weights.bin").write_bytes(b"x")
            os.chmod(folder / "weights.bin", 0o600)  # as some writers leave their files
            (folder / "sub").mkdir(mode=0o700)
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "model").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "model" / "sub").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "model" / "weights.bin").stat().st_mode & 0o777 == file_mode
