"""`catlit-trace-curve <sweep dir> [...]`: effect vs set size over a λ sweep of trace.py runs.

    python trace.py -m search.lambda1=0.005,0.01,0.02,0.05,0.1,0.2
    catlit-trace-curve outputs/multiruns/trace/<sweep>

Each run's PGB-CT selection (threshold on z) is one point (size, effect), labelled by its λ1 and, where
the run was traced with another search preset or other `search.*` overrides, by those (one curve per
such setting); the baselines' points at every size any run reported are gathered from the runs'
metrics.json. Writes curve.md, curve.csv and curve.png into --out (default: the first folder) and
prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from catlit.hooks.selection import Selection
from catlit.tracing.compare import pgbct_name, search_setting
from catlit.tracing.plots import effect_vs_size

KEY = re.compile(r"^([a-z_]+)/k(\d+)/effect_(train|heldout)$")  # every method's table row


def collect(folders: list[Path]) -> tuple[list[dict], dict]:
    points, baselines = [], defaultdict(dict)
    for folder in folders:
        for selection_file in sorted(folder.rglob("selection.json")):
            run = selection_file.parent
            metrics_file, config_file = run / "metrics.json", run / "config.yaml"
            if not (metrics_file.is_file() and config_file.is_file()):
                continue
            selection, metrics = Selection.read(selection_file), json.loads(metrics_file.read_text())
            cfg = OmegaConf.load(config_file)
            points.append(
                {
                    "lambda1": cfg.search.lambda1,
                    "lambda2": cfg.search.lambda2,
                    "size": selection.size,
                    "train": selection.effect["train"],
                    "heldout": selection.effect["heldout"],
                    "dir": str(run),
                    "setting": search_setting(run, leave_out=("search.lambda1",)),
                }
            )
            for key, value in metrics.items():
                match = KEY.match(key)
                if match and match.group(1) != "pgbct":
                    method, size, split = match.group(1), int(match.group(2)), match.group(3)
                    baselines[(method, size)].setdefault(split, value)
    return sorted(points, key=lambda p: (p["size"], p["lambda1"])), baselines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="catlit-trace-curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="trace.py sweep (or run) directories")
    parser.add_argument("--out", type=Path, help="where curve.md/.csv/.png go (default: the first folder)")
    args = parser.parse_args(argv)
    points, baselines = collect(args.folders)
    if not points:
        parser.error(f"no finished trace runs (selection.json + metrics.json) under {args.folders}")
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"method": pgbct_name(p["setting"]) + f" λ1={p['lambda1']}", **p} for p in points]
    rows += [
        {"method": method, "size": size, "train": v.get("train"), "heldout": v.get("heldout")}
        for (method, size), v in sorted(baselines.items())
    ]
    with (out / "curve.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["method", "size", "train", "heldout"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| method | size | effect (train) | effect (held-out) |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['size']} | {r['train']:.4f} | {r['heldout']:.4f} |" for r in rows]
    table = "\n".join(lines)
    (out / "curve.md").write_text(table + "\n")
    curves: dict[str, list] = {}
    for p in points:
        name = pgbct_name(p["setting"]) if p["setting"] else "pgbct (λ sweep)"
        curves.setdefault(name, []).append((p["size"], p["train"]))
    for (method, size), v in baselines.items():
        curves.setdefault(method, []).append((size, v["train"]))
    effect_vs_size(curves, out / "curve.png", "effect, train pairs")
    print(f"{len(points)} runs -> {out}/curve.md, curve.csv, curve.png\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
