"""The tracing recipe behind `python trace.py`: model -> pairs -> PGB-CT and baselines -> write.

Every method's selection is scored by the same evaluator (the hard mask's mean effect) on the
training pairs it was chosen on and on held-out pairs it never saw.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
import transformers
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from catlit.files import write_json
from catlit.models.architectures import Layout
from catlit.models.loading import load_local
from catlit.rundir import RunDir
from catlit.tracing import plots
from catlit.tracing.baselines import BASELINES, Context, Scored
from catlit.tracing.checks import check_finite, check_sizes, check_trace_config
from catlit.tracing.components import ComponentSpace
from catlit.tracing.engine import Tracer
from catlit.tracing.pairs import encode_pairs
from catlit.tracing.search import SearchResult, pgbct

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_indices(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = round(n * heldout_fraction)
    return sorted(order[n_held:]), sorted(order[:n_held])


def run(cfg: DictConfig) -> dict[str, float]:
    started = time.time()
    check_trace_config(cfg)
    if not cfg.model.path:
        raise ValueError(
            "model.path is null: set it to a checkpoint folder (trace.py builds a default model)"
        )
    unknown = sorted(set(cfg.baselines.methods) - set(BASELINES))
    if unknown:
        raise ValueError(f"baselines.methods: unknown {unknown}; choose from {sorted(BASELINES)}")
    run_dir = RunDir(cfg.paths.output_dir)
    with run_dir.claim(what="trace"):
        run_dir.write_config(cfg)
        torch.manual_seed(cfg.seed)
        tracer, train_idx, held_idx, skipped = setup(cfg)
        check_sizes(cfg, tracer.space.numel)
        ctx = _context(cfg, tracer, train_idx, held_idx)
        result = pgbct(tracer, train_idx, seed=cfg.seed, **_search_options(cfg.search))
        selected = result.top(cfg.select.k) if cfg.select.k else result.threshold(cfg.select.threshold)
        if not selected:
            log.warning(
                "no component reached z >= %s: the penalties outweigh every effect; lower search.lambda1 "
                "or select the k largest z with select.k=K",
                cfg.select.threshold,
            )
        sizes = sorted({s for s in [*(cfg.baselines.sizes or []), len(selected)] if 0 < s <= ctx.numel})
        rows = [
            ctx.scored("pgbct", k, selected if k == len(selected) else result.top(k), result.wall_s)
            for k in sizes
        ]
        for name in cfg.baselines.methods:
            rows += BASELINES[name](ctx, sizes)
        main = ctx.score(selected)
        metrics = {
            **write_outputs(cfg, run_dir, tracer.space, result, selected, main, rows),
            "pairs/train": len(train_idx),
            "pairs/heldout": len(held_idx),
            "pairs/skipped": skipped,
            "time/wall_s": round(time.time() - started, 1),
        }
        run_dir.write_metrics(metrics)  # last: the trace is complete
    print(
        _summary(cfg, run_dir.path, rows, selected, result, tracer.space, len(train_idx), len(held_idx)),
        flush=True,
    )
    return metrics


def setup(cfg: DictConfig) -> tuple[Tracer, list[int], list[int], int]:
    """The frozen model, the encoded pairs split into search and held-out sets, and the tracer."""
    device = resolve_device(cfg.device)
    transformers.utils.logging.disable_progress_bar()  # no weight-loading bars between the tables
    m = cfg.model
    tokenizer_options = dict(m.get("tokenizer") or {})
    model, tokenizer = load_local(
        m.path, m.dtype, m.attn_implementation, m.get("base_path"), m.get("family"), tokenizer_options
    )
    model.to(device).eval().requires_grad_(False)  # frozen: only the mask is optimised
    pairs = instantiate(cfg.pairs.loader)
    encoded, skipped = encode_pairs(tokenizer, pairs, cfg.pairs.misaligned)
    if skipped:
        log.warning(
            "%d of %d pairs skipped: base and source do not align token for token", skipped, len(pairs)
        )
    if len(encoded) < 2:
        raise ValueError(f"only {len(encoded)} usable pair(s): tracing needs at least 2")
    train_idx, held_idx = split_indices(len(encoded), cfg.heldout_fraction, cfg.seed)
    tracer = Tracer(
        model,
        ComponentSpace(Layout(model), cfg.components, cfg.mode),
        encoded,
        tokenizer.pad_token_id,
        source=cfg.pairs.source,
        positions=cfg.positions,
        effect=cfg.pairs.effect,
        noise_scale=cfg.noise_scale,
        seed=cfg.seed,
        batch_size=cfg.search.batch_size,
    )
    return tracer, train_idx, held_idx, skipped


def _context(cfg: DictConfig, tracer: Tracer, train_idx: list[int], held_idx: list[int]) -> Context:
    eval_train = train_idx[: cfg.baselines.eval_pairs] if cfg.baselines.eval_pairs else train_idx
    train_prep, held_prep = tracer.prepare(eval_train), tracer.prepare(held_idx)

    def score(indices: list[int]) -> tuple[float, float]:
        mask = tracer.space.from_indices(indices, tracer.device)
        held = (
            check_finite(tracer.evaluate(mask, held_prep), "a held-out effect") if held_prep else float("nan")
        )
        return check_finite(tracer.evaluate(mask, train_prep), "an effect on the training pairs"), held

    options = OmegaConf.to_container(cfg.baselines, resolve=True)
    return Context(tracer, train_prep, score, seed=cfg.seed, options=options)


def _search_options(search: DictConfig) -> dict:
    keys = ("epochs", "lambda1", "lambda2", "schedule", "loss", "init")
    return {"lr": OmegaConf.to_container(search.lr), **{k: search[k] for k in keys}}


def write_outputs(
    cfg, run_dir: RunDir, space, result: SearchResult, selected, main, rows: list[Scored]
) -> dict:
    """selection.json and the plots; returns the metrics (metrics.json is the caller's, written last)."""
    write_json(
        run_dir / "selection.json",
        {
            "method": "pgbct",
            "rule": f"top {cfg.select.k} of z" if cfg.select.k else f"z >= {cfg.select.threshold}",
            "size": len(selected),
            "effect": {"train": main[0], "heldout": main[1]},
            "effect_kind": cfg.pairs.effect,
            "model": str(cfg.model.path),
            "components": [{**space.describe(i), "z": round(float(result.z[i]), 4)} for i in selected],
            "z": {k: v.tolist() for k, v in space.unflatten(result.z).items()},
        },
    )
    metrics: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        key = f"{r.method}/k{r.size}"
        metrics.update({f"{key}/effect_train": r.train, f"{key}/effect_heldout": r.heldout})
        metrics[f"{key}/wall_s"] = round(r.wall_s, 3)
        curves.setdefault(r.method, []).append((r.size, r.train))
    metrics.update(
        {"pgbct/size": len(selected), "pgbct/effect_train": main[0], "pgbct/effect_heldout": main[1]}
    )
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    plots.effect_vs_size(curves, plot_dir / "effect_vs_size.png", f"effect ({cfg.pairs.effect}), train pairs")
    z_groups = space.unflatten(result.z)
    if "heads" in z_groups:
        plots.z_map(z_groups["heads"], plot_dir / "z_heads.png", "PGB-CT z per head")
    names = [space.name(i) for i in range(space.numel)]
    plots.z_history(result.history, names, selected, plot_dir / "z_history.png")
    return metrics


def _summary(cfg, out_dir: Path, rows: list[Scored], selected, result, space, n_train, n_held) -> str:
    lines = [
        f"\nTracing ({', '.join(cfg.components)}; {cfg.mode}; source={cfg.pairs.source}; "
        f"effect={cfg.pairs.effect}) on {n_train} train / {n_held} held-out pairs; run dir: {out_dir}",
        "| method | size | effect (train) | effect (held-out) | time |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.method} | {r.size} | {r.train:.4f} | {r.heldout:.4f} | {r.wall_s:.1f} s |")
    shown = ", ".join(f"{space.name(i)} ({float(result.z[i]):.2f})" for i in selected[:20])
    more = f" ... +{len(selected) - 20}" if len(selected) > 20 else ""
    lines.append(f"selected ({len(selected)}): {shown or 'none'}{more}")
    return "\n".join(lines) + "\n"
