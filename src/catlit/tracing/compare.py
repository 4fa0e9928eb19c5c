"""`catlit-trace-compare <trace run> [...]`: every method at the size of each run's PGB-CT set.

    python trace.py seed=1 model.path=<seed 1's model> hydra.run.dir=outputs/traces/x/s1   # one per seed
    catlit-trace-compare outputs/traces/x --out docs/x

One table, one row per method: for each finished trace run below the folders (a column), the held-out
effect of the method's first k components, k = that run's PGB-CT set size, as a share of all
components' effect (so runs on models with different effect scales average fairly); then the mean and
95% interval over runs, the method's faithfulness on MIB's grid (CPR, CMD: mean and 95% interval over
runs) and what it cost (passes over the pairs, wall time, peak memory: means). Writes compare.md,
compare.csv, compare.png, faithfulness.png (mean sufficiency curves) and runs.md (each column's runs
and the command that reproduces each) into --out (default: the first folder).

With --records, each compared run's record (metrics.json, selection.json, its config and Hydra's
record: a few KB, not the tensors) is copied to <out>/records/<folder>/<run>/ beside the tables, so
the tables are regenerated, and extended with new runs, from the out folder alone
(`catlit-trace-compare <out>/records <new runs> --out <out> --records`): a record stands for the run
it was copied from (its commands name that run's folder), and where the run itself is compared too,
the run is read and the record left out.

A run traced with another PGB-CT setting (`search=paper`, `search.loss=inverse`, `positions=last`, ...)
reports its PGB-CT as `pgbct (<preset>, <overrides>)`; runs of one seed on the same pairs (the same
size and the same all-components effect: `search=paper,ranking 'baselines.methods=[all]'` beside a
full run) are one column, so every setting stands next to the baselines of its seed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import shlex
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from catlit.configs import config_dir
from catlit.files import write_text
from catlit.plotting import pyplot, save
from catlit.rundir import is_finished
from catlit.stats import interval
from catlit.tracing.baselines import BASELINES, SEARCH_TRAINED
from catlit.tracing.plots import legend_beside, series_style
from catlit.tracing.progress import HELDOUT


def collect(folders: list[Path], size: int | None = None) -> tuple[list[str], list[dict]]:
    """(methods, one row per run: name, size, all-components effect, {method: share of it}); the
    size is each run's PGB-CT set size, or `size`."""
    rows, methods, passed = [], [], []
    found = [s.parent for folder in folders for s in sorted(Path(folder).rglob("selection.json"))]
    live = {origin(run).resolve() for run in found if not is_record(run) and is_finished(run)}
    seen: set[Path] = set()
    for run in found:
        where = origin(run).resolve()
        if where in seen or (is_record(run) and where in live):
            continue  # one run listed twice, or the record of a run that is compared itself
        seen.add(where)
        if not is_finished(run):
            passed.append(f"{run}: unfinished (no metrics.json)")
            continue
        try:
            metrics = json.loads((run / "metrics.json").read_text())
            k = int(size or metrics["pgbct/size"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            passed.append(f"{run / 'metrics.json'}: unreadable ({type(err).__name__}: {err})")
            continue
        full = _all(metrics)
        setting = search_setting(run)
        shares = {}
        for key, value in metrics.items():
            if key.endswith(f"/k{k}/effect_heldout") and not key.startswith("all/"):
                method = method_name(key.split("/")[0], setting)
                shares[method] = value / full
                methods.append(method)
        measured = {method_name(m, setting): _measures(metrics, m) for m in _methods(metrics)}
        rows.append(
            {
                "run": run.name,
                "size": k,
                "all": full,
                "shares": shares,
                "seed": _seed(run),
                "measures": measured,
                "paths": [run],
                "pairs": pair_effects(run, k, setting),
            }
        )
    for why in passed:  # counted and named, never dropped silently
        print(f"warning: skipped {why}", file=sys.stderr)
    if passed:
        print(f"warning: {len(passed)} trace run(s) skipped (see above)", file=sys.stderr)
    order = list(BASELINES)  # PGB-CT (each setting) first, then the registry's order
    return sorted(
        dict.fromkeys(methods),
        key=lambda m: (
            not m.startswith("pgbct"),
            m != "pgbct",
            order.index(_base(m)) if _base(m) in order else 99,
            m,
        ),
    ), named(merge_seeds(rows))


def named(rows: list[dict]) -> list[dict]:
    """Each column named by its seed (`seed 1`), or by its folder where it has none; columns that
    would share a name also carry their first run's folder (`seed 1 · lambda/0`)."""
    for r in rows:
        r["run"] = f"seed {r['seed']}" if r["seed"] is not None else r["paths"][0].name
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["run"]] = counts.get(r["run"], 0) + 1
    for r in rows:
        if counts[r["run"]] > 1:
            r["run"] += f" · {r['paths'][0].parent.name}/{r['paths'][0].name}"
    return rows


MEASURES = ("cpr", "cmd", "forwards", "backwards", "wall_s", "peak_mb")
COSTS = (("forwards", ""), ("backwards", ""), ("wall_s", " s"), ("peak_mb", " MB"))


def _methods(metrics: dict) -> list[str]:
    return sorted(
        {k.split("/")[0] for k in metrics if k.endswith("/wall_s") and k.count("/") == 1} - {"all", "time"}
    )


def _measures(metrics: dict, method: str) -> dict:
    """A method's MIB measures and costs, and its sufficiency curve {size: value}, where recorded."""
    out = {name: metrics[f"{method}/{name}"] for name in MEASURES if f"{method}/{name}" in metrics}
    prefix, suffix = f"{method}/curve/k", "/sufficiency"
    out["curve"] = {
        int(k[len(prefix) : -len(suffix)]): v
        for k, v in metrics.items()
        if k.startswith(prefix) and k.endswith(suffix)
    }
    sizes = [
        int(k.split("/")[1][1:]) for k in metrics if k.startswith("all/k") and k.endswith("/effect_heldout")
    ]
    out["numel"] = sizes[0] if sizes else None
    return out


def method_name(method: str, setting: str) -> str:
    """A row's name: PGB-CT and the baselines trained with the search's settings (`SEARCH_TRAINED`:
    hard-concrete) carry the run's search setting (`search_setting`; none for the default), the other
    baselines do not depend on it."""
    if setting and (method == "pgbct" or method in SEARCH_TRAINED):
        return f"{method} ({setting})"
    return method


def pgbct_name(setting: str) -> str:
    """PGB-CT's row or curve name for a search setting (`search_setting`): `pgbct` for the default."""
    return method_name("pgbct", setting)


def _base(name: str) -> str:
    return name.split(" (", 1)[0]


HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")  # Hydra's record of a run, in <run>/.hydra
SEARCHED = ("positions", "mode", "components", "intervention")  # besides search.*: what PGB-CT searches


def search_setting(run: Path, leave_out: tuple[str, ...] = ()) -> str:
    """`<search preset>, <overrides>` of a run ("" for the default search): the `search.*` overrides and
    those of what is searched (`positions`, `mode`, `components`, `intervention`), leaving out the keys
    in `leave_out` (e.g. `search.lambda1` for the points of a λ sweep), then the settings whose default
    changed since the run (`changed_since`)."""
    hydra_dir = run / ".hydra"
    if not (hydra_dir / "hydra.yaml").is_file():
        return ""
    choices = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices
    overrides = (
        list(OmegaConf.load(hydra_dir / "overrides.yaml")) if (hydra_dir / "overrides.yaml").is_file() else []
    )
    keys = [_override_key(o) for o in overrides]
    changed = [
        o
        for o, key in zip(overrides, keys)
        if (key.startswith("search.") or key in SEARCHED) and key not in leave_out
    ]
    preset = choices.get("search", "default")
    changed += changed_since(run)
    if preset == "default" and not changed:
        return ""
    return ", ".join([preset, *changed])


def changed_since(run: Path) -> list[str]:
    """`search.<key>=<value>` for each search setting (a number or a name) the run recorded with another
    value than its own overrides compose to today, where no override set it: a run traced before a
    default changed is named by what it ran with, not as today's default. A record that no longer
    composes (an option since renamed) is named in a warning and compared with nothing."""
    hydra_dir = run / ".hydra"
    files = [hydra_dir / f for f in HYDRA_FILES]
    if not all(f.is_file() for f in files):
        return []
    overrides = tuple(str(o) for o in OmegaConf.load(files[1]))
    config_name = OmegaConf.select(OmegaConf.load(files[2]), "hydra.job.config_name", default="trace")
    try:
        now = _composed_search(config_name, overrides)
    except Exception as err:  # whatever stops the composition: reported, never fatal to a comparison
        print(
            f"warning: {run}: its overrides no longer compose ({type(err).__name__}: {err})", file=sys.stderr
        )
        return []
    was = OmegaConf.to_container(OmegaConf.load(files[0])).get("search") or {}
    overridden = {_override_key(o) for o in overrides}
    return [
        f"search.{key}={was[key]}"
        for key, value in now.items()
        if f"search.{key}" not in overridden
        and key in was
        and not isinstance(value, (dict, list))
        and was[key] != value
    ]


def _override_key(override: str) -> str:
    """`search.loss` of `search.loss=relative` (and of `+search.loss=...`, `~search.loss`)."""
    return str(override).split("=", 1)[0].lstrip("+~")


@functools.cache
def _composed_search(config_name: str, overrides: tuple[str, ...]) -> dict:
    """The `search` section that `overrides` compose to with today's conf/ (what rerunning gives)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg.search, resolve=True)


def _seed(run: Path):
    """The run's seed (None where it has no config.yaml: such runs are never merged)."""
    config = run / "config.yaml"
    return OmegaConf.load(config).get("seed") if config.is_file() else None


def merge_seeds(rows: list[dict]) -> list[dict]:
    """Rows of one seed with the same size and all-components effect (the same pairs) become one."""
    merged: list[dict] = []
    for row in rows:
        twin = next(
            (
                m
                for m in merged
                if row["seed"] is not None
                and m["seed"] == row["seed"]
                and m["size"] == row["size"]
                and math.isclose(m["all"], row["all"], rel_tol=1e-6)
                and not set(m["shares"]) & set(row["shares"])
            ),
            None,
        )
        if twin is None:
            merged.append(
                {
                    **row,
                    "shares": dict(row["shares"]),
                    "measures": dict(row.get("measures", {})),
                    "paths": list(row.get("paths", [])),
                    "pairs": dict(row.get("pairs", {})),
                    "lead": len(row["shares"]),
                }
            )
        else:
            paths = row.get("paths", [])  # the run with the most methods (the baselines') named first
            if len(row["shares"]) > twin["lead"]:
                twin["paths"], twin["lead"] = [*paths, *twin["paths"]], len(row["shares"])
            else:
                twin["paths"] += paths
            twin["shares"].update(row["shares"])
            twin["measures"].update({m: v for m, v in row.get("measures", {}).items() if m != "all"})
            twin["pairs"] = {**row.get("pairs", {}), **twin["pairs"]}  # one `all`: the same pairs
    return merged


RECORD = "record.json"  # in a run's copy under <out>/records: the folder of the run it stands for
RECORDED = ("metrics.json", "selection.json", HELDOUT, "config.yaml", *(f".hydra/{n}" for n in HYDRA_FILES))


def is_record(run: Path) -> bool:
    return (run / RECORD).is_file()


def origin(run: Path) -> Path:
    """The run folder a record stands for (the run itself where it is no record)."""
    if is_record(run):
        return Path(json.loads((run / RECORD).read_text())["run_dir"])
    return run


def keep_records(rows: list[dict], out: Path) -> Path:
    """Copy each compared run's record into <out>/records/<folder>/<run>/ (`RECORDED`, and record.json
    naming the run's own folder); a record already there for the same run is replaced, one for another
    run at the same place is an error, never overwritten."""
    records = out / "records"
    for r in rows:
        for run in r["paths"]:
            where = origin(run)
            target = records / where.parent.name / where.name
            if run.resolve() == target.resolve():
                continue  # compared from the records themselves
            if target.exists() and origin(target).resolve() != where.resolve():
                raise FileExistsError(
                    f"{target} holds the record of {origin(target)}, not of {where}: pass another --out"
                )
            for name in RECORDED:
                if (run / name).is_file():
                    (target / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(run / name, target / name)
            write_text(target / RECORD, json.dumps({"run_dir": str(where)}) + "\n")
    return records


DRAWS = 2000  # bootstrap resamples of the held-out pairs


def pair_effects(run: Path, k: int, setting: str) -> dict[str, list[float]]:
    """{row name: each held-out pair's effect of the method's first k, "all": every component's} from
    the run's heldout.json ({} for a run traced without one)."""
    path = run / HELDOUT
    if not path.is_file():
        return {}
    effects = json.loads(path.read_text())["effects"]
    out = {method_name(key.split("/")[0], setting): v for key, v in effects.items() if key.endswith(f"/k{k}")}
    out.pop("all", None)
    full = [v for key, v in effects.items() if key.startswith("all/")]
    return {**out, "all": full[0]} if full else {}


def pair_intervals(pairs: dict[str, list[float]], seed: int = 0) -> dict[str, dict]:
    """Each method's share with a 95% interval over the held-out pairs (a paired bootstrap: the same
    resampled pairs for every method and for all components' effect), and whether its difference from
    the best share's keeps 0 in its interval (`tied`: the pairs do not separate it from the best)."""
    full = torch.tensor(pairs["all"], dtype=torch.float64)
    draw = torch.randint(len(full), (DRAWS, len(full)), generator=torch.Generator().manual_seed(seed))
    denominator = full[draw].mean(1)
    shares = {
        m: torch.tensor(v, dtype=torch.float64)[draw].mean(1) / denominator
        for m, v in pairs.items()
        if m != "all"
    }
    point = {m: sum(pairs[m]) / sum(pairs["all"]) for m in shares}
    best = max(point, key=point.get)
    out = {}
    for m, boot in shares.items():
        low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        gap = torch.quantile(shares[best] - boot, 0.025).item()
        out[m] = {
            "share": point[m],
            "low": low,
            "high": high,
            "best": m == best,
            "tied": m != best and gap <= 0,
        }
    return out


def pairs_table(methods: list[str], rows: list[dict]) -> str | None:
    """Each method's share in each run with its interval over the held-out pairs (None where no run
    recorded its pairs): `best` marks a run's largest share, `~` one the pairs do not separate from it."""
    paired = [r for r in rows if len(r.get("pairs", {})) > 1]
    if not paired:
        return None
    intervals = [pair_intervals(r["pairs"]) for r in paired]
    lines = [
        _row(["method", *(f"{r['run']} ({len(r['pairs']['all'])} pairs)" for r in paired), "with the best"]),
        "|---" * (len(paired) + 2) + "|",
    ]
    for m in methods:
        cells, lead, runs = [], 0, 0
        for found in intervals:
            if m not in found:
                cells.append("-")
                continue
            e = found[m]
            mark = " best" if e["best"] else " ~" if e["tied"] else ""
            cells.append(f"{e['share']:.2f} ({e['low']:.2f} to {e['high']:.2f}){mark}")
            lead, runs = lead + bool(mark), runs + 1
        if runs:
            lines.append(_row([m, *cells, f"{lead} of {runs}"]))
    return "\n".join(lines)


PAIRS_CAPTION = (
    "Each method's held-out share in each run with its 95% interval over the run's held-out pairs (a "
    "paired bootstrap: every method and all components' effect on the same resampled pairs); `best`: the "
    "run's largest share; `~`: the interval of its difference from the best holds 0, so these pairs do "
    "not separate it from the best; `with the best`: in how many of its runs it is the best or `~`. "
    "Runs traced without heldout.json are left out."
)


def commands(rows: list[dict]) -> str:
    """Each column's runs and the command that reproduces each, from Hydra's record of the run (with
    the settings whose default has changed since, `changed_since`; a run without a record, written by
    hand, is listed without a command)."""
    lines = ["Each column's runs and the command that reproduces each (from Hydra's record of the run):", ""]
    for r in rows:
        for run in r.get("paths", []):
            record = run / ".hydra" / "overrides.yaml"
            if record.is_file():
                overrides = [str(o) for o in OmegaConf.load(record)]
                overrides += changed_since(run)
                command = shlex.join(["python", "trace.py", *overrides, f"hydra.run.dir={origin(run)}"])
                lines.append(f"- {r['run']}: `{command}`")
            else:
                lines.append(f"- {r['run']}: `{run}` (no Hydra record)")
    return "\n".join(lines) + "\n"


def _all(metrics: dict) -> float:
    values = [v for k, v in metrics.items() if k.startswith("all/k") and k.endswith("/effect_heldout")]
    if len(values) != 1:
        raise ValueError(
            "catlit-trace-compare: a run without the all-components row (baselines.methods: all)"
        )
    return values[0]


def table(methods: list[str], rows: list[dict]) -> str:
    """One row per method: its share at each run's size (one column per run), the mean and 95%
    interval over runs and, where recorded, its MIB measures (mean ± 95%) and costs (means)."""
    measured = any(m in r.get("measures", {}) for r in rows for m in methods)
    extra = ["CPR ↑", "CMD ↓", "forwards", "backwards", "wall", "peak memory"] if measured else []
    blank = [""] * (1 + len(extra))
    lines = [
        _row(["method", *(r["run"] for r in rows), "mean ± 95%", *extra]),
        "|---" * (len(rows) + 2 + len(extra)) + "|",
        _row(["*size k*", *(str(r["size"]) for r in rows), *blank]),
        _row(["*all components' effect*", *(f"{r['all']:.4g}" for r in rows), *blank]),
    ]
    for m in methods:
        values = [r["shares"][m] for r in rows if m in r["shares"]]
        cells = [f"{r['shares'][m]:.3f}" if m in r["shares"] else "-" for r in rows]
        lines.append(_row([m, *cells, _mean(values), *(_measures_cells(m, rows) if measured else [])]))
    return "\n".join(lines)


CAPTION = (
    "Held-out effect of each method's first k components as a share of all components' effect, one "
    "column per run (k: the size row), then the mean and 95% interval over runs; where recorded, the "
    "faithfulness on MIB's grid (held-out pairs; CPR, CMD: mean ± 95% over runs) and the cost (means)."
)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _mean(values: list[float]) -> str:
    """`mean ± 95%` over runs; one run is its value alone (no interval to claim), none is `-`."""
    if len(values) > 1:
        mean, _, ci = interval(values)
        return f"{mean:.3f} ± {ci:.3f}"
    return f"{values[0]:.3f}" if values else "-"


def _measures_cells(method: str, rows: list[dict]) -> list[str]:
    """A method's CPR and CMD (mean ± 95% over runs) and its costs (means); `-` where not recorded."""
    entries = [r["measures"][method] for r in rows if method in r.get("measures", {})]
    cells = [_mean([e[n] for e in entries if n in e and e[n] == e[n]]) for n in ("cpr", "cmd")]
    for name, unit in COSTS:
        values = [e[name] for e in entries if name in e]
        cells.append(f"{sum(values) / len(values):.0f}{unit}" if values else "-")
    return cells


def plot_faithfulness(methods: list[str], rows: list[dict], path: Path) -> bool:
    """Mean sufficiency (share of all components' effect) against the fraction of components kept."""
    curves = {}
    for m in methods:
        points: dict[float, list[float]] = {}
        for r in rows:
            e = r.get("measures", {}).get(m)
            if not e or not e.get("curve") or not e.get("numel"):
                continue
            for k, v in e["curve"].items():
                points.setdefault(k / e["numel"], []).append(v)
        if points:
            curves[m] = sorted((x, sum(v) / len(v)) for x, v in points.items())
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for i, (m, pts) in enumerate(curves.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker=".", label=m, **series_style(i, m))
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("fraction of components kept (MIB's grid)")
    ax.set_ylabel("sufficiency (mean over runs)")
    ax.grid(alpha=0.3)
    legend_beside(ax)
    fig.tight_layout()
    save(fig, path)
    return True


def plot(methods: list[str], rows: list[dict], path: Path) -> None:
    """One horizontal bar per method (mean share over runs; dots: the runs), top to bottom in the
    table's order, so long setting names stay readable."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.26 * len(methods)))
    for i, m in enumerate(methods):
        values = [r["shares"][m] for r in rows if m in r["shares"]]
        ax.barh(i, sum(values) / len(values), color="C0" if m.startswith("pgbct") else "C7")
        ax.scatter(values, [i] * len(values), color="k", s=8, zorder=3)
    ax.set_yticks(range(len(methods)), methods, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.6, ls=":")  # all components' effect
    ax.set_xlabel("held-out effect / all components'")
    sizes = sorted({r["size"] for r in rows})
    ax.set_title(f"every method at size {', '.join(map(str, sizes))} (dots: runs)", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--size", type=int, default=None, help="compare at this size (default: PGB-CT's)")
    parser.add_argument(
        "--records", action="store_true", help="also copy each run's record (a few KB) to <out>/records/"
    )
    args = parser.parse_args(argv)
    methods, rows = collect(args.folders, args.size)
    if not rows:
        print(f"error: no finished trace run below {[str(f) for f in args.folders]}")
        return 2
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    text = table(methods, rows) + "\n\n" + CAPTION
    stem = "compare" if args.size is None else f"compare_k{args.size}"
    write_text(out / f"{stem}.md", text + "\n")
    write_text(out / "runs.md", commands(rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "size", "all", *methods])
    for r in rows:
        writer.writerow([r["run"], r["size"], r["all"], *(r["shares"].get(m, "") for m in methods)])
    write_text(out / f"{stem}.csv", buffer.getvalue())
    plot(methods, rows, out / f"{stem}.png")
    plot_faithfulness(methods, rows, out / "faithfulness.png")
    paired = pairs_table(methods, rows)
    if paired:
        write_text(out / f"{stem}_pairs.md", paired + "\n\n" + PAIRS_CAPTION + "\n")
    else:  # no run recorded its pairs: no table left from an earlier comparison either
        (out / f"{stem}_pairs.md").unlink(missing_ok=True)
    if args.records:
        print(f"records of {sum(len(r['paths']) for r in rows)} run(s) in {keep_records(rows, out)}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
