"""The training recipe behind `python train.py`: check -> build -> fit -> test -> write."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from catlit.data.datamodule import group_accuracy
from catlit.files import atomic_dir, write_text
from catlit.models import build_model
from catlit.models.factory import half_precision_plugin, keep_trainable_in_float32
from catlit.rundir import RunDir
from catlit.secrets import redact
from catlit.summaries import RunSummary
from catlit.training.checkpoints import AtomicCheckpointIO, load_checkpoint
from catlit.training.checks import check_config
from catlit.training.distributed import build_strategy, destroy_process_group, full_state_dict, hydra_job_argv
from catlit.training.loggers import finish_loggers
from catlit.training.module import TaskModule
from catlit.training.requeue import AUTO, Requeue, StoppedForRequeue, resolve_auto
from catlit.training.results import format_table
from catlit.training.resume import check_resume, identity

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Train and evaluate as `cfg` says; returns (cfg.optimized_metric's value, all metrics)."""
    started = time.time()
    check_config(cfg)
    if cfg.get("ckpt_path") == AUTO and (done := resolve_auto(cfg)) is not None:
        return _optimized(cfg, done), done  # a rerun sweep: this job had finished
    if cfg.get("ckpt_path"):  # before anything is written: a resume that changes the run is refused
        if not Path(cfg.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} does not exist")
        if cfg.get("train", True):  # a resume; a test-only run just reads the weights
            check_resume(load_checkpoint(cfg.ckpt_path), cfg)
    run_dir = RunDir(cfg.paths.output_dir)
    rank_zero = rank_zero_only.rank == 0  # DDP children run this function too: one writer only
    with run_dir.claim(cfg.get("ckpt_path")) if rank_zero else contextlib.nullcontext():
        if rank_zero:
            run_dir.write_config(cfg)
        module, datamodule, trainer, loggers = setup(cfg, run_dir, rank_zero)
        with hydra_job_argv():  # DDP children join this job, not a new sweep
            try:
                metrics, best = fit_and_test(cfg, trainer, module, datamodule)
            except StoppedForRequeue as stop:  # the signal came: the epoch's checkpoint is written
                if rank_zero:
                    print(stop.callback.requeue(run_dir.path), flush=True)
                finish_loggers(loggers)
                destroy_process_group()
                return None, {}
            if trainer.is_global_zero:
                _write_predictions(run_dir, module, datamodule)
                if datamodule.group_by:  # e.g. ACRE's query types
                    metrics.update(
                        group_accuracy(module.predictions, datamodule.test_sets, datamodule.group_by)
                    )
        gathered = full_state_dict(module.model)  # collective under FSDP2: every rank takes part
        if trainer.is_global_zero:
            metrics = save(run_dir, module, trainer, gathered, metrics, started)
            run_dir.write_summary(_results(cfg, run_dir, module, trainer, metrics, best))
            run_dir.write_metrics(metrics)  # last: the run is complete
        finish_loggers(loggers)
        destroy_process_group()
    return _optimized(cfg, metrics), metrics


def _optimized(cfg: DictConfig, metrics: dict) -> float | None:
    """cfg.optimized_metric's value (what a sweeper minimises or maximises)."""
    target = cfg.get("optimized_metric")
    if target and target not in metrics and not cfg.get("train", True):
        log.warning("optimized_metric=%s: not produced by a run that only tests; returning none", target)
        target = None
    if target and target not in metrics:
        raise KeyError(f"optimized_metric={target!r} was not produced; available: {sorted(metrics)}")
    return metrics[target] if target else None


def setup(cfg: DictConfig, run_dir: RunDir, rank_zero: bool):
    """(TaskModule, TaskDataModule, Trainer, loggers), everything built, nothing trained."""
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    method = instantiate(cfg.method)
    caps = method.capabilities
    datamodule = instantiate(
        cfg.data, fields=caps.batch_fields, eval_fields=caps.eval_batch_fields, shuffle_seed=cfg.seed
    )
    base_dir = run_dir / "base_model" if rank_zero else None
    model, tokenizer = build_model(cfg.model, datamodule.corpus, base_dir, method.builds_adapters)
    model = method.build(model, tokenizer)  # before the Trainer: a method's adapters, router, head
    keep_trainable_in_float32(model)  # adapters a method added train on float32 master weights too
    log.info(parameter_summary(model, method))

    datamodule.set_tokenizer(tokenizer)
    datamodule.setup("fit")
    module = TaskModule(
        model,
        tokenizer,
        method,
        datamodule.task,
        datamodule.val_names,
        datamodule.test_names,
        datamodule.max_new_tokens,
        cfg.optimizer,
        cfg.scheduler,
        cfg.get("nonfinite", "raise"),
        cfg.get("accumulation", "mean"),
    )
    module.run_config = identity(cfg)  # every checkpoint carries it (catlit.training.resume)

    loggers = _instantiate_all(cfg.get("logger"))
    extra = {}
    precision = half_precision_plugin(cfg.model.dtype, cfg.trainer.get("precision", "32-true"))
    if precision:
        log.warning(
            "model.dtype=%s: training with trainer.precision=%s (half-precision compute, float32 master "
            "weights); set trainer.precision yourself to choose otherwise",
            cfg.model.dtype,
            precision,
        )
        extra["precision"] = precision
    callbacks = _instantiate_all(cfg.get("callbacks"))
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect() and any(isinstance(c, Requeue) for c in callbacks):
        plugins.append(SLURMEnvironment(auto_requeue=False))  # Requeue stops at an epoch end instead
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        strategy=build_strategy(cfg.trainer.get("strategy", "auto"), model),
        plugins=plugins,
        **extra,
    )
    for lg in loggers:  # secret values never reach a logger's files (wandb syncs them)
        lg.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))
    return module, datamodule, trainer, loggers


def parameter_summary(model, method) -> str:
    """One line for the console: what trains and how much of it (Lightning's table is switched off)."""
    from torch import nn

    owned = list(method.parameters()) if isinstance(method, nn.Module) else []
    total = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in owned)
    trainable = sum(p.numel() for p in [*model.parameters(), *owned] if p.requires_grad)
    return (
        f"model: {type(model).__name__}; {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters train "
        f"({100 * trainable / max(total, 1):.1f}%, method {method.name})"
    )


def fit_and_test(cfg: DictConfig, trainer: L.Trainer, module: TaskModule, datamodule) -> tuple[dict, str]:
    """Fit (unless train=false), then validation figures and test from the best checkpoint."""
    metrics: dict[str, float] = {}
    best = ""
    if cfg.get("train", True):
        if cfg.get("ckpt_path"):  # a damaged file is named, with the newest loadable one beside it
            load_checkpoint(cfg.ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path") or None, weights_only=True)
        Requeue.check(trainer)  # stopped on the cluster's signal: no validation, no test
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:  # validation figures from the weights that test uses, not the last epoch's
            for result in trainer.validate(
                module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
            ):
                metrics.update({k: float(v) for k, v in result.items() if k.startswith("val/")})
        else:
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    if cfg.get("test", True):
        ckpt = best or (None if cfg.get("train", True) else cfg.get("ckpt_path"))
        log.info("testing with %s", ckpt or "the weights in memory")
        results = trainer.test(
            module, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False, weights_only=True
        )
        for result in results:
            metrics.update({k: float(v) for k, v in result.items()})
    return metrics, best


def save(
    run_dir: RunDir, module: TaskModule, trainer: L.Trainer, gathered, metrics: dict, started: float
) -> dict:
    """The trained model (adapter-only with LoRA) and the method's additions; metrics.json last."""
    with atomic_dir(run_dir / "model") as model_dir:  # the whole folder, or the previous one
        module.model.save_pretrained(model_dir, state_dict=gathered)
        module.tokenizer.save_pretrained(model_dir)
        module.method.save_pretrained(model_dir, module.model)
    for source in summary_sources(module.method, trainer):  # e.g. how often a loss term acted
        metrics.update(source.summary())
    metrics["time/wall_s"] = round(time.time() - started, 1)
    return metrics


def summary_sources(method, trainer: L.Trainer) -> list[RunSummary]:
    """The method and the callbacks that declare the run-summary contract, in that order."""
    return [s for s in [method, *trainer.callbacks] if isinstance(s, RunSummary)]


def _results(cfg, run_dir: RunDir, module: TaskModule, trainer: L.Trainer, metrics: dict, best: str) -> str:
    weights = f"the best checkpoint ({Path(best).name})" if best else "the final weights"
    what = f"{cfg.method.get('name', 'method')} on {cfg.data.get('name', 'data')}"
    lines = [
        f"\nResults ({what}); run dir: {run_dir.path}",
        format_table(metrics),
        f"val and test: {weights}",
    ]
    for source in reversed(summary_sources(module.method, trainer)):  # the probe, then the method
        lines += source.summary_lines(metrics)
    return "\n".join(lines) + "\n"


def _write_predictions(run_dir: RunDir, module: TaskModule, datamodule) -> None:
    for split, rows in module.predictions.items():
        examples = datamodule.test_sets[split].examples
        lines = [json.dumps({"input": examples[r["index"]].input, **r}) for r in rows]  # one per example
        write_text(run_dir / "predictions" / f"{split}.jsonl", "".join(line + "\n" for line in lines))


def _instantiate_all(section: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a logger/callbacks group (an empty group gives [])."""
    if not section:
        return []
    return [instantiate(v) for v in section.values() if isinstance(v, DictConfig) and "_target_" in v]
