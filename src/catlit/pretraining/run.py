"""`python pretrain.py`: build catlit's pretrained base once per config, cached by its hash.

The folder `<out_dir>/base-<hash>/` holds `model/` (a normal HF checkpoint with its tokenizer),
`config.yaml` and `metrics.json` (written last: a folder with it is a finished base). It is built
under a temporary name and renamed into place, so a killed build leaves nothing a later run would
take for a base. `model=base` calls `ensure_base` on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from catlit.files import atomic_dir, remove_partials, waiting_lock, write_json, write_text
from catlit.models.embedded import build_embedded
from catlit.models.fetch import MANIFEST, problems, write_manifest
from catlit.models.integrity import safetensors_problem
from catlit.pretraining.corpus import documents
from catlit.pretraining.module import PackedCorpus, Pretrainer, pack
from catlit.rundir import is_finished


def digest(base: DictConfig) -> str:
    """The hash of everything that decides the weights (the `base` section)."""
    payload = json.dumps(OmegaConf.to_container(base, resolve=True), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def base_folder(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir) / f"base-{digest(cfg.base)}"


def _check(base: DictConfig) -> None:
    for key in ("steps", "batch_size", "block_size"):
        if int(base[key]) < 1:
            raise ValueError(f"pretrain: base.{key} must be >= 1, got {base[key]}")
    if int(base.corpus.documents) < 1 or int(base.corpus.heldout) < 1:
        raise ValueError("pretrain: base.corpus.documents and base.corpus.heldout must be >= 1")
    if not float(base.lr) > 0:
        raise ValueError(f"pretrain: base.lr must be > 0, got {base.lr}")


def build(cfg: DictConfig, folder: Path) -> dict:
    """Pretrain the base of `cfg.base` into `folder` (which must not exist yet); its metrics."""
    base = cfg.base
    _check(base)
    start = time.perf_counter()
    L.seed_everything(int(base.seed), workers=True, verbose=False)
    corpus = base.corpus
    mix, rows = dict(corpus.mix), tuple(corpus.rows)
    train_docs = documents(int(corpus.documents), int(base.seed), mix, rows, "train")
    held_docs = documents(int(corpus.heldout), int(base.seed), mix, rows, "heldout")
    model, tokenizer = build_embedded(train_docs, dict(base.arch), int(base.vocab_size))
    train, heldout = (pack(d, tokenizer, int(base.block_size)) for d in (train_docs, held_docs))
    module = Pretrainer(model, float(base.lr), float(base.weight_decay), int(base.warmup), int(base.steps))
    data = PackedCorpus(train, heldout, int(base.batch_size), int(base.seed))
    accelerator = (
        "gpu" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=int(base.steps),
        max_epochs=math.ceil(int(base.steps) * int(base.batch_size) / len(train)),
        val_check_interval=min(int(cfg.eval_every), int(base.steps)),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(cfg.progress_bar),
        deterministic=True,
    )
    trainer.fit(module, datamodule=data)
    heldout_loss = float(trainer.validate(module, datamodule=data, verbose=False)[0]["heldout/loss"])
    wall = time.perf_counter() - start
    metrics = {
        "heldout_loss": heldout_loss,
        "heldout_perplexity": math.exp(heldout_loss),
        "uniform_loss": math.log(len(tokenizer)),  # a model that learned nothing
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_seen": int(base.steps) * int(base.batch_size) * int(base.block_size),
        "train_tokens": int(train.numel()),
        "wall_s": wall,
        "device": accelerator,
    }
    with atomic_dir(folder) as building:  # the folder appears only when complete
        model.cpu().eval().save_pretrained(building / "model")
        tokenizer.save_pretrained(building / "model")
        write_manifest(
            building / "model", what="catlit's pretrained base"
        )  # sizes and hashes, checked on reuse
        write_text(building / "config.yaml", OmegaConf.to_yaml(base, resolve=True))
        write_json(building / "metrics.json", metrics)
    return metrics


def base_problem(folder: Path) -> str | None:
    """Why a built base cannot be reused (a file cut short or changed since it was written), or None."""
    if not is_finished(folder):
        return None
    model = folder / "model"
    found = problems(model) if (model / MANIFEST).is_file() else []  # bases built before manifests
    found += [p for f in sorted(model.glob("*.safetensors")) if (p := safetensors_problem(f))]
    try:
        json.loads((folder / "metrics.json").read_text())
    except ValueError:
        found.append(f"{folder / 'metrics.json'} is damaged")
    return found[0] if found else None


def set_aside_if_damaged(folder: Path) -> None:
    """A damaged base is kept aside (named) and built again."""
    problem = base_problem(folder)
    if problem:
        aside = folder.parent / f".{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(folder, aside)
        print(
            f"the cached base is damaged ({problem}): moved it to {aside} and building it again", flush=True
        )


def building(folder: Path):
    """One build of a base at a time: a second pretrain.py (or model=base run) of the same config
    waits for the first, then reuses what it built."""
    waiting = f"another process is building the base {folder.name}; waiting for it"
    return waiting_lock(folder.parent / f".{folder.name}.lock", waiting)


def run(cfg: DictConfig) -> dict:
    """The pretrain.py recipe: reuse the cached base of this config, or build it."""
    folder = base_folder(cfg)
    with building(folder):
        remove_partials(folder.parent, of=folder.name)  # a build that was killed before its rename
        set_aside_if_damaged(folder)
        if is_finished(folder):
            metrics = json.loads((folder / "metrics.json").read_text())
            print(f"pretrained base of this config already built: {folder / 'model'}", flush=True)
        else:
            print(f"pretraining catlit's base ({describe(cfg)}) into {folder}", flush=True)
            metrics = build(cfg, folder)
    print(summary(folder, metrics), flush=True)
    return metrics


def describe(cfg: DictConfig) -> str:
    a, b = cfg.base.arch, cfg.base
    return (
        f"Llama {a.num_hidden_layers} layers x {a.num_attention_heads} heads, width {a.hidden_size}; "
        f"{b.steps} steps of {b.batch_size} x {b.block_size} tokens"
    )


def summary(folder: Path, m: dict) -> str:
    return (
        f"base: {folder / 'model'} | {m['parameters'] / 1e6:.2f} M parameters | "
        f"{m['tokens_seen'] / 1e6:.1f} M tokens seen | held-out loss {m['heldout_loss']:.3f} "
        f"(perplexity {m['heldout_perplexity']:.2f}; "
        f"uniform {m['uniform_loss']:.2f}) | {m['wall_s'] / 60:.1f} min on {m['device']}"
    )


def ensure_base(overrides: list[str]) -> Path:
    """The `model/` folder of the base that conf/pretrain.yaml + `overrides` define, built on first use
    (inside a running Hydra app: composed with Hydra's compose API)."""
    from hydra import compose

    cfg = compose("pretrain", overrides=list(overrides))
    folder = base_folder(cfg)
    if not is_finished(folder) or base_problem(folder):
        print("model=base: the pretrained base of this config is not built yet; building it once", flush=True)
        run(cfg)  # under the build lock: checks again, and reuses a base another process just built
    else:
        print(f"model=base: reusing the pretrained base in {folder / 'model'}", flush=True)
    return folder / "model"
