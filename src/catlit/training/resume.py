"""What a resume may change. A checkpoint carries the settings its run trained with; resuming it with
settings that define another run (another method, model, data, optimizer or seed) is refused, naming
the keys that differ, so a `cat_share` run resumed as `method=baseline` never reads as a baseline.

What may change on a resume: how long and where it runs (`trainer.*`: more epochs, other devices or
precision), what it logs and keeps (`logger.*`, `callbacks.*`, `paths.*`, `tags`, `task_name`), whether
it tests and what it reports (`test`, `optimized_metric`), and evaluation-only data settings
(`data.eval_batch_size`, `data.num_workers`, `data.max_new_tokens`)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from catlit.errors import ConfigError
from catlit.secrets import redact

log = logging.getLogger(__name__)

KEY = "catlit_run_config"
MAY_CHANGE = (
    "trainer.", "logger.", "callbacks.", "paths.", "hydra.", "ckpt_path", "tags", "task_name", "test",
    "train", "optimized_metric", "data.eval_batch_size", "data.num_workers", "data.max_new_tokens",
)  # fmt: skip


def identity(cfg: DictConfig) -> dict[str, object]:
    """The flattened settings that define a run (secret values redacted)."""
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk(redact(OmegaConf.to_container(cfg, resolve=True)), "")
    return {k: v for k, v in flat.items() if not any(k == m or k.startswith(m) for m in MAY_CHANGE)}


def check_resume(checkpoint: dict, cfg: DictConfig) -> None:
    stored = checkpoint.get(KEY)
    if stored is None:  # written before checkpoints carried their settings
        log.warning("ckpt_path=%s carries no settings: the resume is not checked against them", cfg.ckpt_path)
        return
    now = identity(cfg)
    changed = sorted(  # a group's name first: "method.name: 'cat_share' -> 'baseline'" says it all
        (k for k in set(stored) | set(now) if stored.get(k, "<unset>") != now.get(k, "<unset>")),
        key=lambda k: (not k.endswith(".name"), k),
    )
    if changed:
        shown = "; ".join(
            f"{k}: {stored.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}" for k in changed[:6]
        )
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: resuming with settings that define another run: {shown}{more}. A "
            "resume may change trainer.*, logger.*, callbacks.*, paths, tags and evaluation settings; "
            "start a new run (another hydra.run.dir) for the rest"
        )
