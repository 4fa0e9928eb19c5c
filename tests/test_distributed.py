"""Multi-process DDP on CPU (gloo): CAT trains, evaluation scores every example exactly once, and a
Hydra multirun of DDP jobs produces exactly one run per job."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from tests.helpers.runs import ROOT

SMALL = [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "++data.params.n_val=15",
    "++data.params.n_iid=15",
    "++data.params.n_ood=15",
    "trainer.num_sanity_val_steps=0",
]


def cli(
    tmp_path: Path, *args: str, timeout: int = 400, small: list[str] = SMALL
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "train.py", *args, *small, f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_ddp_scores_each_example_once(tmp_path):
    cli(tmp_path, "trainer=ddp", "trainer.max_epochs=3", "+data.params.n_train=200")
    (run_dir,) = tmp_path.glob("runs/train/*")
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran this job
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("iid", "ood"):
        rows = read(run_dir / "predictions" / f"{split}.jsonl")
        assert sorted(r["index"] for r in rows) == list(range(15))  # 15 rows on 2 ranks: no repeats
        assert metrics[f"test/{split}/acc"] == pytest.approx(sum(r["correct"] for r in rows) / 15)
    assert metrics["test/iid/acc"] > 0  # learned something, so the comparison above is not 0 == 0


@pytest.mark.slow
def test_multirun_of_ddp_jobs_makes_exactly_one_run_per_job(tmp_path):
    cli(
        tmp_path,
        "-m",
        "trainer=ddp",
        "method=cat,baseline",
        "trainer.max_epochs=1",
        "+data.params.n_train=64",
    )
    sweeps = list(tmp_path.glob("multiruns/train/*"))
    assert len(sweeps) == 1 and not (tmp_path / "runs").exists()
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    assert [OmegaConf.load(j / "config.yaml").method.name for j in jobs] == ["cat", "baseline"]
    assert all((j / "metrics.json").is_file() and (j / "train_ddp_process_1.log").is_file() for j in jobs)


@pytest.mark.slow
def test_sweeps_started_together_never_share_a_directory(tmp_path):
    args = [
        sys.executable,
        "train.py",
        "-m",
        "seed=1,2",
        "train=false",
        "test=false",
        "optimized_metric=null",
        "logger=none",
        "callbacks=none",
        f"paths.log_dir={tmp_path}",
        "+data.params.n_train=16",
    ]
    procs = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    sweeps = list(tmp_path.glob("multiruns/train/*"))
    assert len(sweeps) == 3
    assert all(sorted(p.name for p in s.iterdir() if p.is_dir()) == ["0", "1"] for s in sweeps)


@pytest.mark.parametrize("lora", [False, True])
def test_fsdp_strategy_wraps_the_decoder_layers(tmp_path, lora):
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from catlit.models.lora import apply_lora
    from catlit.training.distributed import build_strategy
    from tests.helpers.models import tiny_llama
    from tests.helpers.runs import compose_cfg

    model = tiny_llama("sdpa")
    if lora:
        model = apply_lora(model)
    cfg = compose_cfg(tmp_path, ["trainer=fsdp"])
    strategy = build_strategy(cfg.trainer.strategy, model)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {
        LlamaDecoderLayer
    }
    assert strategy.kwargs["use_orig_params"] is True
    assert build_strategy("ddp", model) == "ddp"


@pytest.mark.slow
def test_optuna_search_reports_the_best_trial(tmp_path):
    cli(
        tmp_path,
        "hparams_search=stg_optuna",
        "experiment=quick",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "callbacks=none",
    )
    (sweep,) = tmp_path.glob("multiruns/stg_optuna/*")
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    trials = [json.loads((d / "metrics.json").read_text()) for d in sorted(sweep.iterdir()) if d.is_dir()]
    assert len(trials) == 2
    assert best.best_value == pytest.approx(max(t["val/ood/acc"] for t in trials))
    searched = {"method.alpha", "method.gamma", "method.variant", "method.share", "method.layers"}
    assert searched | {"method.per_head"} == set(best.best_params)


def train_losses(run_dir: Path) -> list[tuple[int, float, float]]:
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with metrics_csv.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    return [(int(r["step"]), float(r["train/loss"]), float(r["train/attn"])) for r in rows]


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_trains_like_one_process(tmp_path):
    """FSDP2 for real: 2 gloo processes, weights sharded, CAT loss; both ranks see the same batches,
    so the averaged gradient is the single process's and every logged loss must match it."""
    common = [
        "trainer.max_epochs=2",
        "+data.params.n_train=64",
        "trainer.log_every_n_steps=1",
        "method.alpha=1000",  # keeps the Re-Attention term active, so it is compared too
    ]
    single, sharded = tmp_path / "single", tmp_path / "fsdp2"
    cli(tmp_path, *common, f"hydra.run.dir={single}")
    cli(
        tmp_path,
        *common,
        "trainer=fsdp2",
        "+trainer.use_distributed_sampler=false",
        f"hydra.run.dir={sharded}",
    )
    assert (sharded / "train_ddp_process_1.log").is_file()  # rank 1 ran
    expected, got = train_losses(single), train_losses(sharded)
    assert [s for s, _, _ in got] == [s for s, _, _ in expected] and len(got) == 8
    assert all(attn != 0 for _, _, attn in expected), "precondition: the CAT term is active"
    for (step, loss, attn), (_, loss_ref, attn_ref) in zip(got, expected):
        assert loss == pytest.approx(loss_ref, rel=1e-4), step
        assert attn == pytest.approx(attn_ref, rel=1e-4, abs=1e-6), step
    # checkpoints and the saved model are whole (gathered from the shards), equal to the single run's
    for name in ("checkpoints/last.ckpt",):
        ref = torch.load(single / name, weights_only=False)["state_dict"]
        out = torch.load(sharded / name, weights_only=False)["state_dict"]
        assert ref.keys() == out.keys()
        for key in ref:
            torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)
    ref_model = AutoModelForCausalLM.from_pretrained(single / "model")
    out_model = AutoModelForCausalLM.from_pretrained(sharded / "model")
    for (key, ref), (_, out) in zip(ref_model.state_dict().items(), out_model.state_dict().items()):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=key)
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((sharded / "metrics.json").read_text())
    assert b["test/iid/acc"] == a["test/iid/acc"] and b["test/ood/acc"] == a["test/ood/acc"]


@pytest.mark.slow
def test_iclm_trains_under_ddp_with_its_own_parameters(tmp_path):
    """The router, codebook, norms and head are the method's: DDP must reduce them with the adapters
    (sparse mode leaves a domain module without inputs on some steps: no unused-parameter error)."""
    cli(
        tmp_path,
        "trainer=ddp",
        "method=iclm",
        "method.mode=sparse",
        "data=acre",
        "data.preset=small",
        "data.limit=48",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "callbacks.model_checkpoint.save_top_k=-1",  # every epoch's checkpoint
        small=[a for a in SMALL if not a.startswith("++data.params")],  # STG sizes; acre uses data.limit
    )
    (run_dir,) = tmp_path.glob("runs/train/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("iid", "compositional", "systematic"):
        rows = read(run_dir / "predictions" / f"{split}.jsonl")
        assert sorted(r["index"] for r in rows) == list(range(48))
        assert 0 < metrics[f"test/{split}/routing_purity"] <= 1
    first, second = (
        torch.load(run_dir / "checkpoints" / f"best-epoch{e:02d}.ckpt", weights_only=False)["state_dict"]
        for e in (0, 1)
    )
    for key in ("method.router.codebook.weight", "method.router.projector.weight", "method.head.weight"):
        assert not torch.equal(first[key], second[key]), key  # the optimizer steps the method's weights


@pytest.mark.slow
def test_fsdp2_refuses_a_method_with_its_own_parameters(tmp_path):
    args = [
        "method=iclm",
        "data=acre",
        "data.preset=small",
        "data.limit=16",
        "trainer=fsdp2",
        "trainer.max_epochs=1",
    ]
    result = subprocess.run(
        [sys.executable, "train.py", *args, "logger=csv", f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "owns parameters outside the model" in result.stderr and "use trainer=ddp" in result.stderr
