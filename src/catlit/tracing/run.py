"""The tracing recipe behind `python trace.py`: model -> pairs -> PGB-CT and baselines -> write.

Every method's selection is scored by the same evaluator (the hard mask's mean effect) on the
training pairs it was chosen on and on held-out pairs it never saw.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from hydra.utils import instantiate
from omegaconf import DictConfig

from catlit.files import write_text
from catlit.hooks.selection import Selection
from catlit.models.architectures import Layout
from catlit.models.loading import load_local
from catlit.rundir import FINISHED, RunDir, is_finished
from catlit.tracing import measures, mib_graph, plots
from catlit.tracing.baselines import BASELINES, Context, Ranking, Scored
from catlit.tracing.checks import check_finite, check_sizes, check_trace_config
from catlit.tracing.components import ComponentSpace
from catlit.tracing.engine import Tracer, mean_of
from catlit.tracing.memory import peak_memory
from catlit.tracing.pairs import encode_pairs
from catlit.tracing.progress import HELDOUT, MethodStore
from catlit.tracing.search import SearchResult, pgbct
from catlit.tracing.settings import BaselineSettings, SearchSettings

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
    resume = cfg.get("resume")
    if resume not in (None, "auto"):
        raise ValueError(f"resume={resume!r}: null (a fresh run directory) or auto")
    run_dir = RunDir(cfg.paths.output_dir)
    if resume == "auto" and is_finished(run_dir.path):  # a rerun sweep skips what it finished
        done = json.loads((run_dir / FINISHED).read_text())
        missing = [m for m in cfg.baselines.methods if f"{m}/wall_s" not in done]
        unpaired = done.get("pairs/heldout", 0) > 0 and not (run_dir / HELDOUT).is_file()  # traced before
        if not missing and not unpaired:
            print(f"run directory {run_dir.path} holds a finished trace: skipped (resume=auto)", flush=True)
            return done
        lacks = " and ".join([*([str(missing)] if missing else []), *(["heldout.json"] if unpaired else [])])
        print(f"run directory {run_dir.path} holds a finished trace without {lacks}: adding them, every "
              "method it finished read from methods/ (resume=auto)", flush=True)  # fmt: skip
    store = MethodStore(run_dir.path, cfg)
    kept = str(store.path) if resume == "auto" and store.holds_any() else None  # methods it finished
    with run_dir.claim(kept, what="trace", restart_unfinished=resume == "auto"):
        store.check()
        run_dir.write_config(cfg)
        torch.manual_seed(cfg.seed)
        tracer, train_idx, held_idx, skipped = setup(cfg)
        space = tracer.space
        # what every method searches and is scored with: catlit's patch, or MIB's circuit (the rest corrupted)
        searched = tracer.circuits() if cfg.get("intervention", "catlit") == "mib" else tracer
        check_sizes(cfg, space.numel)
        truth = truth_indices(cfg.get("truth"), space)
        search = SearchSettings.from_config(cfg.search)
        result, pgbct_mb = store.search() or _search(searched, train_idx, search, cfg, store)
        selected = result.top(cfg.select.k) if cfg.select.k else result.threshold(cfg.select.threshold)
        if not selected:
            log.warning(
                "no component reached z >= %s: the penalties outweigh every effect; lower search.lambda1 "
                "or select the k largest z with select.k=K",
                cfg.select.threshold,
            )
        sizes = sorted({s for s in [*(cfg.baselines.sizes or []), len(selected)] if 0 < s <= space.numel})
        # greedy (k·N passes) stops at the largest size asked for, not at PGB-CT's set, which can be 70 heads
        asked = [s for s in cfg.baselines.sizes or [] if 0 < s <= space.numel] or sizes
        ctx = _context(cfg, searched, train_idx, held_idx, max(asked, default=1))
        epochs = search.passes
        rankings = [
            Ranking("pgbct", [result.ranking()], result.wall_s, 2 * epochs + 2, epochs + 1, chosen=selected)
        ]
        rankings[0].peak_mb = pgbct_mb
        for name in store.with_saved(cfg.baselines.methods):  # a resumed trace keeps every method it ran
            rankings.append(
                store.ranking(name)
                or store.save_ranking(measured_cost(searched, lambda name=name: BASELINES[name](ctx)))
            )
        rows = score_rankings(ctx, rankings, sizes)
        measured = faithfulness(cfg, tracer, ctx, rankings, held_idx, truth)
        main = ctx.score(selected)
        write_heldout(run_dir, held_idx, rows)
        metrics = {
            **write_outputs(cfg, run_dir, space, result, selected, main, rows, rankings, measured),
            "pairs/train": len(train_idx),
            "pairs/heldout": len(held_idx),
            "pairs/skipped": skipped,
            "time/wall_s": round(time.time() - started, 1),
        }
        run_dir.write_metrics(metrics)  # last: the trace is complete
    print(_summary(cfg, run_dir.path, rows, rankings, measured, selected, result, space, train_idx, held_idx))
    return metrics


def _search(tracer: Tracer, train_idx, search: SearchSettings, cfg, store: MethodStore):
    """PGB-CT's search and its peak memory, kept in the store as soon as it ends."""
    with peak_memory(tracer.device, interval=0.02) as memory:
        result = pgbct(tracer, train_idx, search, seed=cfg.seed, threshold=cfg.select.threshold)
    store.save_search(result, memory["mb"])
    return result, memory["mb"]


def measured_cost(tracer: Tracer, method: Callable[[], Ranking]) -> Ranking:
    """The method's ranking, with the peak memory it took (CPU: resident set size; CUDA: tensors)."""
    with peak_memory(tracer.device, interval=0.02) as memory:
        ranking = method()
    ranking.peak_mb = memory["mb"]
    return ranking


def truth_indices(names, space) -> list[int] | None:
    """A known circuit given by component names (`truth=[L0H1,L1H2]`), as flat indices."""
    if not names:
        return None
    index = {space.name(i): i for i in range(space.numel)}
    unknown = [n for n in names if n not in index]
    if unknown:
        shown = ", ".join(list(index)[:6])
        raise ValueError(f"truth: unknown component(s) {unknown}; names look like {shown}, ...")
    return [index[n] for n in names]


def score_rankings(ctx: Context, rankings: list[Ranking], sizes: list[int]) -> list[Scored]:
    """Every ranking's first k components at every size (random: the mean over its orders), and the
    set a method chose itself where its size is not among them."""
    rows = []
    for r in rankings:
        wanted = (
            [ctx.numel] if r.method == "all" else sorted({*sizes, *([len(r.chosen)] if r.chosen else [])})
        )
        for k in wanted:
            if r.chosen is not None and k == len(r.chosen):
                sets = [r.chosen]
            else:
                sets = [order[:k] for order in r.orders]
            scores = [ctx.score(s) for s in sets]
            train = sum(s[0] for s in scores) / len(scores)
            held = sum(s[1] for s in scores) / len(scores)
            effects = [ctx.heldout_effects.get(tuple(sorted(s))) for s in sets]
            pairs = [sum(e) / len(e) for e in zip(*effects)] if all(effects) else None
            rows.append(Scored(r.method, k, train, held, r.wall_at.get(k, r.wall_s), pairs))
    return rows


def write_heldout(run_dir: RunDir, held_idx: list[int], rows: list[Scored]) -> None:
    """heldout.json: every scored set's effect on each held-out pair (`<method>/k<size>`, the pairs in
    `pairs`' order), so a comparison can put an interval over the pairs on each share
    (`catlit-trace-compare`)."""
    effects = {f"{r.method}/k{r.size}": r.heldout_pairs for r in rows if r.heldout_pairs is not None}
    write_text(run_dir / HELDOUT, json.dumps({"pairs": list(held_idx), "effects": effects}) + "\n")


def faithfulness(cfg, tracer: Tracer, ctx: Context, rankings: list[Ranking], held_idx, truth) -> dict:
    """Sufficiency and necessity curves (and their areas) of every ranking on the measure split,
    and ROC AUC against `truth` where it is given."""
    points = int(cfg.measures.points)
    if points <= 0:
        return {}
    on_heldout = cfg.measures.split == "heldout" and held_idx
    intervention = cfg.measures.get("intervention", "catlit")
    if intervention == "mib":  # MIB's: the clean input runs, what is outside the circuit is corrupted
        tracer = tracer.swapped()
        prepared = tracer.prepare(held_idx if on_heldout else eval_pairs(cfg, ctx.train_idx))
    else:  # its own batches: the methods may have searched another intervention (`intervention=mib`)
        prepared = tracer.prepare(held_idx if on_heldout else eval_pairs(cfg, ctx.train_idx))
    full = check_finite(
        tracer.evaluate(tracer.space.full(1.0, device=tracer.device), prepared), "the full effect"
    )
    grid = cfg.measures.get("grid", "mib")
    sizes = measures.grid_sizes(grid, tracer.space.numel, points)
    out = {
        "split": "heldout" if on_heldout else "train",
        "full": full,
        "grid": grid,
        "intervention": intervention,
        "methods": {},
    }
    for r in rankings:
        if r.method == "all":
            continue
        entry = measures.curves(tracer, prepared, r.orders, sizes, full, grid, intervention)
        entry["auroc"] = (
            sum(measures.auroc(o, truth) for o in r.orders) / len(r.orders) if truth else float("nan")
        )
        out["methods"][r.method] = entry
    return out


def setup(cfg: DictConfig) -> tuple[Tracer, list[int], list[int], int]:
    """The frozen model, the encoded pairs split into search and held-out sets, and the tracer."""
    device = resolve_device(cfg.device)
    transformers.utils.logging.disable_progress_bar()  # no weight-loading bars between the tables
    m = cfg.model
    tokenizer_options = dict(m.get("tokenizer") or {})
    model, tokenizer = load_local(
        m.path,
        m.dtype,
        m.attn_implementation,
        m.get("base_path"),
        m.get("family"),
        tokenizer_options,
        m.get("gguf_file"),
    )
    model.to(device).eval().requires_grad_(False)  # frozen: only the mask is optimised
    pairs = instantiate(cfg.pairs.loader)
    if cfg.pairs.get("limit"):  # the first N pairs: a quick look at a large model
        pairs = pairs[: int(cfg.pairs.limit)]
    if cfg.pairs.get("sample"):
        pairs = sample_pairs(pairs, int(cfg.pairs.sample), cfg.seed)
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
        noise_std=cfg.get("noise_std"),
        seed=cfg.seed,
        batch_size=cfg.search.batch_size,
    )
    return tracer, train_idx, held_idx, skipped


def sample_pairs(pairs: list, n: int, seed: int) -> list:
    """`n` of the pairs drawn uniformly (seeded), in the loader's order: a loader that lists one kind
    first (Professions: every female-stereotyped profession) is not cut to that kind, as a limit is."""
    if n >= len(pairs):
        return pairs
    keep = sorted(random.Random(f"sample/{seed}").sample(range(len(pairs)), n))
    return [pairs[i] for i in keep]


def eval_pairs(cfg: DictConfig, train_idx: list[int]) -> list[int]:
    """The training pairs selections are scored on: at most `baselines.eval_pairs` of them."""
    return train_idx[: cfg.baselines.eval_pairs] if cfg.baselines.eval_pairs else train_idx


def _context(cfg: DictConfig, tracer: Tracer, train_idx, held_idx, max_size: int) -> Context:
    train_prep, held_prep = tracer.prepare(eval_pairs(cfg, train_idx)), tracer.prepare(held_idx)
    per_pair: dict[tuple[int, ...], list[float]] = {}  # each scored set's held-out effects, pair by pair

    def score(indices: list[int]) -> tuple[float, float]:
        mask = tracer.space.from_indices(indices, tracer.device)
        held = float("nan")
        if held_prep:
            effects = tracer.pair_effects(mask, held_prep)
            held = check_finite(mean_of(effects), "a held-out effect")
            per_pair[tuple(sorted(indices))] = torch.cat(effects).tolist()
        return check_finite(tracer.evaluate(mask, train_prep), "an effect on the training pairs"), held

    options = BaselineSettings.from_config(cfg.baselines)
    search = SearchSettings.from_config(cfg.search)
    return Context(tracer, train_prep, score, cfg.seed, options, list(train_idx), search, max_size, per_pair)


def write_outputs(
    cfg, run_dir: RunDir, space, result: SearchResult, selected, main, rows, rankings, measured
) -> dict:
    """selection.json and the plots; returns the metrics (metrics.json is the caller's, written last)."""
    Selection(
        method="pgbct",
        rule=f"top {cfg.select.k} of z" if cfg.select.k else f"z >= {cfg.select.threshold}",
        size=len(selected),
        effect={"train": main[0], "heldout": main[1]},
        effect_kind=cfg.pairs.effect,
        model=str(cfg.model.path),
        components=[{**space.describe(i), "z": round(float(result.z[i]), 4)} for i in selected],
        z={k: v.tolist() for k, v in space.unflatten(result.z).items()},
        restarts=[{"objective": o, "size": n} for o, n in result.restarts],
    ).write(run_dir / "selection.json")
    write_mib_files(cfg, run_dir, space, rankings, len(selected))
    metrics: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        key = f"{r.method}/k{r.size}"
        metrics.update({f"{key}/effect_train": r.train, f"{key}/effect_heldout": r.heldout})
        metrics[f"{key}/wall_s"] = round(r.wall_s, 3)
        curves.setdefault(r.method, []).append((r.size, r.train))
    for r in rankings:
        metrics.update({f"{r.method}/forwards": r.forwards, f"{r.method}/backwards": r.backwards})
        metrics[f"{r.method}/wall_s"] = round(r.wall_s, 3)
        metrics[f"{r.method}/peak_mb"] = round(r.peak_mb, 1)
        if r.chosen is not None and r.method != "all":  # the set the method picks itself
            metrics[f"{r.method}/size"] = len(r.chosen)
    for method, entry in measured.get("methods", {}).items():
        for name in (*measures.AREAS[entry["grid"]], "auroc"):
            metrics[f"{method}/{name}"] = entry[name]
        for k, suff, nec in zip(entry["sizes"], entry["sufficiency"], entry["necessity"]):
            metrics[f"{method}/curve/k{k}/sufficiency"] = suff  # MIB's smallest fractions may share a k
            metrics[f"{method}/curve/k{k}/necessity"] = nec
    if measured:
        metrics["measures/full_effect"] = measured["full"]
    metrics.update(
        {"pgbct/size": len(selected), "pgbct/effect_train": main[0], "pgbct/effect_heldout": main[1]}
    )
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    plots.effect_vs_size(curves, plot_dir / "effect_vs_size.png", f"effect ({cfg.pairs.effect}), train pairs")
    if measured.get("methods"):
        plots.faithfulness(measured, plot_dir / "faithfulness.png")
    z_groups = space.unflatten(result.z)
    if "heads" in z_groups:
        plots.z_map(z_groups["heads"], plot_dir / "z_heads.png", "PGB-CT z per head")
    names = [space.name(i) for i in range(space.numel)]
    plots.z_history(result.history, names, selected, plot_dir / "z_history.png")
    return metrics


def write_mib_files(cfg, run_dir: RunDir, space, rankings, size: int) -> None:
    """mib/<method>.json: each ranking as a circuit file in MIB's graph format (random: its first order)."""
    options = cfg.get("mib") or {}
    if not options.get("files", True):
        return
    loader = str(cfg.pairs.loader.get("_target_", "")).rsplit(".", 1)[-1]
    about = {"model": str(cfg.model.path), "pairs": loader, "effect": cfg.pairs.effect}
    for r in rankings:
        if r.method == "all":
            continue
        in_graph = r.chosen if r.chosen is not None else r.order[:size]
        path = run_dir / "mib" / f"{r.method}.json"
        about["method"] = r.method
        mib_graph.write(path, space, r.order, in_graph, dict(about), options.get("edges", False))


def _summary(
    cfg, out_dir: Path, rows, rankings, measured, selected, result, space, train_idx, held_idx
) -> str:
    lines = [
        f"\nTracing ({', '.join(cfg.components)}; {cfg.mode}; source={cfg.pairs.source}; "
        f"effect={cfg.pairs.effect}; intervention={cfg.get('intervention', 'catlit')}) on "
        f"{len(train_idx)} train / {len(held_idx)} held-out pairs; run dir: {out_dir}",
        "| method | size | effect (train) | effect (held-out) | time |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.method} | {r.size} | {r.train:.4f} | {r.heldout:.4f} | {r.wall_s:.1f} s |")
    if measured.get("methods"):
        mib = measured["grid"] == "mib"
        grid = (
            f"MIB's fractions 0.1%..100% of {space.numel}, linear trapezoid"
            if mib
            else f"catlit's log-spaced sizes 1..{space.numel}, ln k / ln N axis"
        )
        head = (
            "CPR ↑ | CMD ↓ | nec. area ↓"
            if mib
            else "suff. area (log) ↑ | dev. area (log) ↓ | nec. area (log) ↓"
        )
        lines += [
            "",
            f"Faithfulness on the {measured['split']} pairs (normalised by all components' effect "
            f"{measured['full']:.4f}; {grid}; {measured['intervention']}'s intervention):",
            f"| method | {head} | ROC AUC | passes | time | peak memory |",
            "|---|---|---|---|---|---|---|---|",
        ]
        cost = {r.method: r for r in rankings}
        for method, e in measured["methods"].items():
            r = cost[method]
            auroc = "-" if e["auroc"] != e["auroc"] else f"{e['auroc']:.3f}"
            areas = " | ".join(f"{e[name]:.3f}" for name in measures.AREAS[e["grid"]])
            lines.append(
                f"| {method} | {areas} | {auroc} | {r.passes} | {r.wall_s:.1f} s | {r.peak_mb:.0f} MB |"
            )
    shown = ", ".join(f"{space.name(i)} ({float(result.z[i]):.2f})" for i in selected[:20])
    more = f" ... +{len(selected) - 20}" if len(selected) > 20 else ""
    empty = "none: every z is below select.threshold (lower search.lambda1, or set select.k)"
    lines.append(f"selected ({len(selected)}): {shown or empty}{more}")
    return "\n".join(lines) + "\n"
