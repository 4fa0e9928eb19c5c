"""The training pipeline behind `python train.py`: compose -> data -> model -> fit -> test -> report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from catlit.models import build_model
from catlit.models.factory import half_precision_plugin, keep_trainable_in_float32
from catlit.training.checks import check_config, check_run_dir
from catlit.training.distributed import (
    build_strategy,
    destroy_process_group,
    full_state_dict,
    hydra_job_argv,
)
from catlit.training.module import TaskModule

log = logging.getLogger(__name__)


def _instantiate_all(section: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a logger/callbacks group (an empty group gives [])."""
    if not section:
        return []
    return [instantiate(v) for v in section.values() if isinstance(v, DictConfig) and "_target_" in v]


def format_table(metrics: dict[str, float]) -> str:
    """Accuracy (and, for quantity tasks, mean absolute error) per split: one row per stage and figure."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] in ("acc", "mae"):
            rows.setdefault((parts[0], parts[2]), {})[parts[1]] = value
    splits = sorted({s for r in rows.values() for s in r}, key=lambda s: (s != "iid", s))
    lines = ["| stage | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for stage in ("val", "test"):
        # an MAE over no answer with a number is nan: shown as "-" (the `no_number` share says why)
        mae = lambda v: f"{v:.2f}" if v == v else "-"  # noqa: E731
        for figure, show in (("acc", lambda v: f"{100 * v:.1f}%"), ("mae", mae)):
            if (stage, figure) in rows:
                cells = [show(rows[stage, figure][s]) if s in rows[stage, figure] else "-" for s in splits]
                lines.append(f"| {stage} {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_attention_summary(metrics: dict[str, float]) -> str:
    """What happened to the answer rows' attention on the causes (probe batch), and how often L_attn acted."""
    lines = []
    if "probe/attn_ratio_start" in metrics:
        lines.append(
            "attention on causes (probe, mean over layers and heads): ratio "
            f"{metrics['probe/attn_ratio_start']:.2f} -> {metrics['probe/attn_ratio_end']:.2f}"
        )
        if "probe/attn_share_start" in metrics:
            lines[-1] += (
                f", share of mass {100 * metrics['probe/attn_share_start']:.1f}% -> "
                f"{100 * metrics['probe/attn_share_end']:.1f}%"
            )
    if "train/attn_active_steps" in metrics:
        lines.append(f"L_attn active in {100 * metrics['train/attn_active_steps']:.1f}% of training steps")
    return "".join(line + "\n" for line in lines)


def run(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Train and evaluate as `cfg` says; returns (cfg.optimized_metric's value, all metrics)."""
    started = time.time()
    check_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    # DDP children run this function too (rank from the launcher's environment): one writer only
    is_rank_zero = rank_zero_only.rank == 0
    if is_rank_zero:
        check_run_dir(out_dir, cfg.get("ckpt_path"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} does not exist")
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    method = instantiate(cfg.method)
    datamodule = instantiate(cfg.data, fields=method.batch_fields, shuffle_seed=cfg.seed)
    model, tokenizer = build_model(
        cfg.model,
        datamodule.corpus,
        method.attn_implementation(cfg.model.attn_implementation),
        save_dir=out_dir / "base_model" if is_rank_zero else None,
    )
    model = method.build(model, tokenizer)  # before the Trainer: a method's adapters, router, head
    keep_trainable_in_float32(model)  # adapters a method added train on float32 master weights too
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
    )

    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    strategy = build_strategy(cfg.trainer.get("strategy", "auto"), model)
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
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, strategy=strategy, **extra
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    with hydra_job_argv():  # DDP children join this job, not a new sweep
        best = ""
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path") or None)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:  # validation figures from the weights that test uses, not the last epoch's
                for result in trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False):
                    metrics.update({k: float(v) for k, v in result.items() if k.startswith("val/")})
            else:
                metrics.update(
                    {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
                )
        if cfg.get("test", True):
            ckpt = best or (None if cfg.get("train", True) else cfg.get("ckpt_path"))
            log.info("testing with %s", ckpt or "the weights in memory")
            for result in trainer.test(module, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
            if trainer.is_global_zero:
                _write_predictions(out_dir, module, datamodule)

    gathered = full_state_dict(module.model)  # collective under FSDP2: every rank takes part
    if trainer.is_global_zero:
        model_dir = out_dir / "model"
        module.model.save_pretrained(model_dir, state_dict=gathered)  # adapter-only for LoRA
        tokenizer.save_pretrained(model_dir)
        module.method.save_pretrained(model_dir, module.model)
        for source in [module.method, *callbacks]:  # e.g. how often L_attn acted, the probe's ratio
            if hasattr(source, "summary"):
                metrics.update(source.summary())
        metrics["time/wall_s"] = round(time.time() - started, 1)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        weights = f"the best checkpoint ({Path(best).name})" if best else "the final weights"
        print(
            f"\nResults ({cfg.method.get('name', 'method')} on {cfg.data.get('name', 'data')}); "
            f"run dir: {out_dir}\n{format_table(metrics)}\nval and test: {weights}\n"
            f"{format_attention_summary(metrics)}",
            flush=True,
        )
    _finish_loggers(loggers)
    destroy_process_group()

    target = cfg.get("optimized_metric")
    if target and target not in metrics:
        raise KeyError(f"optimized_metric={target!r} was not produced; available: {sorted(metrics)}")
    return (metrics[target] if target else None), metrics


def _write_predictions(out_dir: Path, module: TaskModule, datamodule) -> None:
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for split, rows in module.predictions.items():
        examples = datamodule.test_sets[split].examples
        with (pred_dir / f"{split}.jsonl").open("w") as handle:
            for row in rows:  # already one per example, in index order
                row = {"input": examples[row["index"]].input, **row}
                handle.write(json.dumps(row) + "\n")


def _finish_loggers(loggers: list) -> None:
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            folder = wandb.run.dir.removesuffix("/files") if wandb.run else None
            offline = wandb.run is not None and wandb.run.settings._offline
            wandb.finish()  # multirun jobs share a process: close this run before the next starts
            if folder and rank_zero_only.rank == 0:
                how = f"upload it with: wandb sync {folder}" if offline else "synced online"
                print(f"wandb run: {folder} ({how})", flush=True)
