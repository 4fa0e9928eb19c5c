"""`python report.py <sweep dir> [...]`: IID / OOD accuracy per setting, over seeds, with 95% intervals.

Every run directory below the given folders (one with metrics.json and config.yaml) is a run. Runs
are grouped by every config value that differs between them, except the seed and what only names or
places a run (paths, loggers, tags, task name); so 2-epoch smoke runs never average with 20-epoch
runs, whatever the method. Repeats of one seed are averaged first, so "seeds" counts distinct seeds.
Each cell is mean ± the 95% confidence half-width (Student's t over seeds). With a baseline on the same
setting otherwise, each other row gets "gap closed": (OOD - OOD_base) / (IID_base - OOD_base), and
"IID change", each with an interval: over the per-seed differences to the baseline's run of the same
seed where both ran the same seeds (paired; the baseline's mean gap as the unit), else Welch's.
Test splits are read from the runs (`test/<split>/acc`): IID first, then every other split; where
there is no split named `ood` (ACRE's compositional and systematic), "OOD" is the mean of the others
per seed, and gap closed is measured on it.
Writes report.md, report.csv and report.png (into --out, default the first folder).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import re
import statistics
import sys
from pathlib import Path

from hydra.utils import get_class
from omegaconf import OmegaConf

from catlit.methods.base import Capabilities
from catlit.methods.finetune import REFERENCE_METHOD, Baseline
from catlit.plotting import pyplot
from catlit.plotting import save as save_figure
from catlit.stats import interval, welch_half_width

SPLITS = ("iid", "ood")  # the two every table has; other test splits are added as found
# what names or places a run, never what it computes (what a sweeper optimises, how to resume included)
IGNORED = (
    "seed", "data.seed", "paths.", "logger.", "tags", "task_name", "hydra.", "ckpt_path", "optimized_metric",
)  # fmt: skip


@functools.cache
def _method_class(target: str):
    """catlit's own method classes only: a run's config.yaml is data, and importing whatever module it
    names would run that module's code."""
    if not isinstance(target, str) or not target.startswith("catlit.methods."):
        return None
    try:
        return get_class(target)
    except Exception:
        return None


def method_capabilities(target: str) -> Capabilities:
    """What a run's method class declares (its report label keys and names); nothing if it is gone."""
    cls = _method_class(target)
    return cls.capabilities if cls is not None else Capabilities()


def headline_keys(flat: dict[str, str]) -> list[str]:
    """The config keys a run's label always shows, as its method class declares them."""
    cls = _method_class(flat.get("method._target_", ""))
    if cls is None:
        return []
    config = {k.removeprefix("method."): v for k, v in flat.items() if k.startswith("method.")}
    return [f"method.{k}" for k in cls.headline_keys(config)]


def _flat(node, prefix: str = "") -> dict[str, str]:
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
    elif isinstance(node, list):
        out[prefix[:-1]] = json.dumps(node)
    else:
        out[prefix[:-1]] = "" if node is None else str(node)
    return out


def _ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def read_run(metrics_file: Path) -> tuple[dict | None, str | None]:
    """(run, None) for a finished training run; (None, why) for a folder to skip, with the reason a user
    should hear (None for a folder that is not a training run at all: a trace, an annotation)."""
    config_file = metrics_file.parent / "config.yaml"
    if not config_file.is_file():
        return None, "no config.yaml beside it"
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    except Exception as err:  # a truncated or foreign YAML file
        return None, f"config.yaml unreadable ({str(err).splitlines()[0][:80]})"
    if not isinstance(cfg, dict) or "method" not in cfg or "trainer" not in cfg:
        return None, None  # not a training run (trace.py writes metrics.json too)
    try:
        metrics = json.loads(metrics_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"metrics.json is not valid JSON ({err.msg if hasattr(err, 'msg') else err})"
    if not isinstance(metrics, dict):
        return None, "metrics.json is not an object"
    accuracies = {k: v for k, v in metrics.items() if k.startswith("test/") and k.endswith("/acc")}
    bad = [k for k, v in accuracies.items() if not _finite(v)]
    if bad:
        return None, f"{bad[0]}={metrics[bad[0]]!r} is not a finite number"
    if not accuracies:
        return None, "no test accuracy in metrics.json"
    metrics = {k: v for k, v in metrics.items() if _finite(v)}  # lists, strings: not figures
    # values holding the run's own directory (checkpoint dirs, root dirs) only place the run
    places = {str(metrics_file.parent.resolve()), str((cfg.get("paths") or {}).get("output_dir", "\0"))}
    flat = {k: v for k, v in _flat(cfg).items() if not _ignored(k) and not any(p and p in v for p in places)}
    capabilities = method_capabilities(flat.get("method._target_", ""))
    if flat.get("train") == "False" and capabilities.attention_probe:
        # never trained, and predicting with the model's own forward: the model itself, whatever
        # loss-only method the run happened to compose (an untuned ICLM or Polytropon keeps its name)
        flat = {k: v for k, v in flat.items() if not k.startswith("method.")}
        flat |= {"method.name": REFERENCE_METHOD, "method._target_": f"catlit.methods.{Baseline.__name__}"}
    references = capabilities.run_reference_keys
    for key, text in references.items():  # one trace per seed: the setting is "traced heads"
        if flat.get(f"method.{key}"):
            flat[f"method.{key}"] = text
    return {
        "config": flat,
        "seed": cfg.get("seed"),
        "metrics": metrics,
        "dir": str(metrics_file.parent),
    }, None


def _data_label(flat: dict[str, str]) -> str:
    """The data's name, and its preset where that says more (`stg (toy)`, not `acre (acre)`)."""
    name, preset = flat.get("data.name", ""), flat.get("data.preset", "")
    return f"{name} ({preset})" if preset and preset != name else name


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_runs(folders: list[Path]) -> list[dict]:
    """Every finished training run below `folders`; runs that cannot be read are skipped with a
    warning naming the file, and counted."""
    runs, skipped = [], 0
    for folder in folders:
        for metrics_file in sorted(folder.rglob("metrics.json")):
            run, why = read_run(metrics_file)
            if run is not None:
                runs.append(run)
            elif why is not None:
                skipped += 1
                print(f"warning: skipped {metrics_file}: {why}", file=sys.stderr)
    if skipped:
        print(f"warning: {skipped} run(s) skipped (see above)", file=sys.stderr)
    return runs


def _difference_ci(row: dict, base: dict, split: str) -> float | None:
    """95% half-width of mean(row) - mean(base) on `split`: paired by seed where the seeds match
    (None with a single seed on either side: no interval)."""
    a, b = row["per_seed"][split], base["per_seed"][split]
    if set(a) == set(b) and len(a) > 1:
        return interval([a[s] - b[s] for s in a])[2]
    return welch_half_width(list(a.values()), list(b.values()))


def test_splits(runs: list[dict]) -> list[str]:
    """iid, the other test splits by name, and ood (measured, or the others' mean)."""
    found = {
        k.split("/")[1] for r in runs for k in r["metrics"] if k.startswith("test/") and k.endswith("/acc")
    }
    return ["iid", *sorted(found - set(SPLITS)), "ood"]


def _with_mean_ood(metrics: dict, splits: list[str]) -> dict:
    """A run with no `ood` split gets the mean of its non-IID splits as `test/ood/acc`."""
    others = [f"test/{s}/acc" for s in splits if s not in SPLITS]
    if "test/ood/acc" in metrics or not others or not all(k in metrics for k in others):
        return metrics
    return {**metrics, "test/ood/acc": statistics.mean(metrics[k] for k in others)}


def aggregate(runs: list[dict], baseline: str = REFERENCE_METHOD) -> tuple[list[dict], list[str]]:
    splits = test_splits(runs)
    runs = [{**r, "metrics": _with_mean_ood(r["metrics"], splits)} for r in runs]
    keys = sorted({k for r in runs for k in r["config"]})
    varying = [k for k in keys if len({r["config"].get(k, "") for r in runs}) > 1]
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run["config"].get(k, "") for k in varying), []).append(run)
    rows = []
    for setting, members in groups.items():
        first = members[0]["config"]
        row = {
            "setting": setting,
            "data": _data_label(first),
            "method": first.get("method.name", ""),
            "headline": headline_keys(first),
            "capabilities": method_capabilities(first.get("method._target_", "")),
            **{k: first.get(k, "") for k in headline_keys(first)},
            "train": first.get("train", ""),
            **dict(zip(varying, setting)),
        }
        by_seed: dict = {}
        for m in members:
            by_seed.setdefault(m["seed"], []).append(m["metrics"])
        row["seeds"] = len(by_seed)
        row["per_seed"] = {}
        row["splits"] = splits
        row["by_seed"] = by_seed
        for split in splits:
            key = f"test/{split}/acc"
            per_seed = {
                seed: statistics.mean(100 * x[key] for x in ms)
                for seed, ms in by_seed.items()
                if all(key in x for x in ms)
            }
            row["per_seed"][split] = per_seed
            if per_seed:
                values = list(per_seed.values())
                row[f"{split}_mean"], row[f"{split}_std"], row[f"{split}_ci95"] = interval(values)
        rows.append(row)
    method_keys = [i for i, k in enumerate(varying) if k.startswith("method.")]
    for row in rows:  # gap closed, against the baseline whose non-method settings are the same
        rest = [v for i, v in enumerate(row["setting"]) if i not in method_keys]
        base = next(
            (
                b
                for b in rows
                if b["method"] == baseline
                and [v for i, v in enumerate(b["setting"]) if i not in method_keys] == rest
            ),
            None,
        )
        if base and row is not base and {"iid_mean", "ood_mean"} <= set(base) and "ood_mean" in row:
            gap = base["iid_mean"] - base["ood_mean"]
            if gap > 0:
                row["gap_closed"] = (row["ood_mean"] - base["ood_mean"]) / gap
                ci = _difference_ci(row, base, "ood")
                row["gap_closed_ci95"] = None if ci is None else ci / gap
            row["iid_change"] = row["iid_mean"] - base["iid_mean"]
            row["iid_change_ci95"] = _difference_ci(row, base, "iid")
    for row in rows:  # a label names a method's headline values and what varies among its rows
        peers = [r for r in rows if r["method"] == row["method"]]
        shown = [
            k for k in varying if len({r.get(k, "") for r in peers}) > 1 and not _implied_by_data(k, peers)
        ]
        row["label_keys"] = [*(k for k in row["headline"] if k not in shown), *shown]
    rows.sort(key=lambda r: (r["data"], r["method"] != baseline, label(r)))
    return rows, varying


def _implied_by_data(key: str, rows: list[dict]) -> bool:
    """A data setting that is one value per dataset (its files, its scorer): the data column says it."""
    if not key.startswith("data."):
        return False
    return all(len({r.get(key, "") for r in rows if r["data"] == d}) <= 1 for d in {r["data"] for r in rows})


# settings outside the method that read better as words than as key=value
VALUE_LABELS = {
    "model.lora.enabled": {"True": "LoRA", "False": "full FT"},
    "train": {"True": "fine-tuned", "False": "untuned"},
}


def label(row: dict) -> str:
    parts = [row["method"]]
    for key in row["label_keys"]:
        value = row.get(key, "")
        if key in ("method.name", "data.name", "data.preset") or value == "":
            continue
        if value in VALUE_LABELS.get(key, {}):
            parts.append(VALUE_LABELS[key][value])
            continue
        caps, name = row["capabilities"], key.removeprefix("method.")
        if name in caps.run_reference_keys:
            parts.append(caps.run_reference_keys[name])
            continue
        name = caps.label_names.get(name, name)
        parts.append(f"{name}={value}")
    if row.get("train") == "False" and "train" not in row["label_keys"]:
        parts.append(VALUE_LABELS["train"]["False"])  # a run that only tested: never fine-tuned
    return " ".join(parts)


def _cell(row: dict, split: str) -> str:
    if f"{split}_mean" not in row:
        return "-"
    ci = row[f"{split}_ci95"]
    return f"{row[f'{split}_mean']:.1f} ± {ci:.1f}" if row["seeds"] > 1 else f"{row[f'{split}_mean']:.1f}"


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(split, header) per accuracy column: IID, the named OOD splits, then OOD (or their mean)."""
    splits = rows[0]["splits"] if rows else list(SPLITS)
    named = [s for s in splits if s not in SPLITS]
    return [
        ("iid", "IID acc"),
        *((s, f"{s} acc") for s in named),
        ("ood", "OOD mean" if named else "OOD acc"),
    ]


def markdown(rows: list[dict], varying: list[str]) -> str:
    columns = _columns(rows)
    lines = [
        "| data | setting | seeds | " + " | ".join(h for _, h in columns) + " | gap closed | IID change |",
        "|---" * (len(columns) + 5) + "|",
    ]
    for r in rows:
        gap, change = "-", "-"
        if "gap_closed" in r:
            ci = r["gap_closed_ci95"]
            gap = f"{100 * r['gap_closed']:.0f}%" + ("" if ci is None else f" ± {100 * ci:.0f}")
        if "iid_change" in r:
            ci = r["iid_change_ci95"]
            change = f"{r['iid_change']:+.1f}" + ("" if ci is None else f" ± {ci:.1f}")
        cells = " | ".join(_cell(r, s) for s, _ in columns)
        lines.append(f"| {r['data']} | {label(r)} | {r['seeds']} | {cells} | {gap} | {change} |")
    return "\n".join(lines)


def plot(rows: list[dict], varying: list[str], path: Path) -> None:
    plt = pyplot()

    labels = [label(r) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    columns = _columns(rows)
    width = 0.8 / len(columns)
    for j, (split, header) in enumerate(columns):
        means = [r.get(f"{split}_mean", 0) for r in rows]
        errors = [r.get(f"{split}_ci95", 0) for r in rows]
        offset = (j - (len(columns) - 1) / 2) * width
        ax.bar(
            [i + offset for i in x], means, width, yerr=errors, capsize=3, label=header.removesuffix(" acc")
        )
    ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("IID vs OOD accuracy (mean, 95% interval over seeds)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def figure(row: dict, key: str, scale: float = 100.0) -> str:
    """Mean ± 95% half-width over the row's seeds of metric `key` ("-" where no run has it)."""
    values = [
        statistics.mean(scale * x[key] for x in ms)
        for ms in row["by_seed"].values()
        if all(key in x for x in ms)
    ]
    if not values:
        return "-"
    mean, _, half = interval(values)
    return f"{mean:.1f} ± {half:.1f}" if len(values) > 1 else f"{mean:.1f}"


def group_table(rows: list[dict], key: str) -> str:
    """Accuracy per split and per value of an example attribute (`data.group_by`, e.g. query_type)."""
    pattern = re.compile(rf"^test/([^/]+)/by_{re.escape(key)}/([^/]+)/acc$")
    found = sorted(
        {
            m.groups()
            for r in rows
            for ms in r["by_seed"].values()
            for x in ms
            for k in x
            if (m := pattern.match(k))
        }
    )
    if not found:
        return ""
    header = " | ".join(f"{split}: {value}" for split, value in found)
    lines = [f"| data | setting | {header} |", "|---" * (len(found) + 2) + "|"]
    for r in rows:
        cells = " | ".join(figure(r, f"test/{split}/by_{key}/{value}/acc") for split, value in found)
        lines.append(f"| {r['data']} | {label(r)} | {cells} |")
    return "\n".join(lines)


def extra_table(rows: list[dict], keys: list[str]) -> str:
    """Any other figures of the runs' metrics.json (as they are stored, x100 for shares)."""
    lines = ["| data | setting | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    lines += [f"| {r['data']} | {label(r)} | " + " | ".join(figure(r, k) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def per_seed_table(rows: list[dict]) -> str:
    """Test accuracy of every setting on every seed: "IID / OOD" (the first two test splits)."""
    seeds = sorted({seed for row in rows for split in row["splits"] for seed in row["per_seed"][split]})
    head = "| data | setting | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [head, "|---|---|" + "---|" * len(seeds)]
    for row in rows:
        cells = []
        for seed in seeds:
            values = [row["per_seed"][split].get(seed) for split in row["splits"][:2]]
            cells.append(" / ".join("-" if v is None else f"{v:.1f}" for v in values))
        lines.append(f"| {row['data']} | {label(row)} | " + " | ".join(cells) + " |")
    splits = " / ".join(s.upper() for s in rows[0]["splits"][:2]) if rows else ""
    return f"Test accuracy per seed ({splits}):\n\n" + "\n".join(lines)


def write_csv(rows: list[dict], varying: list[str], path: Path) -> None:
    stats = [f"{s}_{k}" for s, _ in _columns(rows) for k in ("mean", "std", "ci95")]
    keys = ["data", "setting_label", *varying, "seeds", *stats]
    keys += ["gap_closed", "gap_closed_ci95", "iid_change", "iid_change_ci95"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "setting_label": label(r)} for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep (or run) directories")
    parser.add_argument("--out", type=Path, help="where report.md/.csv/.png go (default: the first folder)")
    parser.add_argument(
        "--baseline",
        default=REFERENCE_METHOD,
        help="the method (name) gap closed is measured against, e.g. lora",
    )
    parser.add_argument("--by", action="append", default=[], help="also a table per value of this example "
                        "attribute (data.group_by, e.g. query_type)")  # fmt: skip
    parser.add_argument("--extra", action="append", default=[], help="also a table of this metric "
                        "(e.g. test/iid/routing_purity), mean ± 95%% interval x100")  # fmt: skip
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        parser.error(
            f"no finished runs (metrics.json + config.yaml) under {', '.join(map(str, args.folders))}"
        )
    rows, varying = aggregate(runs, args.baseline)
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, varying)
    for key in args.by:
        grouped = group_table(rows, key)
        table += (
            f"\n\nTest accuracy per {key}:\n\n{grouped}" if grouped else f"\n\n(no test/*/by_{key} figures)"
        )
    if args.extra:
        table += f"\n\nOther figures (x100):\n\n{extra_table(rows, args.extra)}"
    (out / "report.md").write_text(table + "\n")
    (out / "per_seed.md").write_text(per_seed_table(rows) + "\n")
    write_csv(rows, varying, out / "report.csv")
    plot(rows, varying, out / "report.png")
    print(
        f"{len(runs)} runs, {len(rows)} settings -> {out}/report.md, per_seed.md, report.csv, report.png"
        f"\n\n{table}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
