"""Results tables in the docs are generated from the committed reports, never copied by hand.

A page marks each generated table with a directive and an end marker:

    <!-- generated: include cat_ood_smollm2/report.md -->
    ...the file's text...
    <!-- end generated -->

    <!-- generated: rows {"column": "model", "from": [{"report": "cat_ood/report.md",
         "label": "random init", "settings": ["baseline", "cat α=2.0 γ=1.0"]}], "cite": [...]} -->
    ...the report rows named by their `setting` ("data | setting" where a setting repeats), the
    label in a first column, then cited rows (a paper's own figures, quoted)...
    <!-- end generated -->

    <!-- generated: mass cat_ood_smollm2/attention_mass.csv -->
    ...`catlit-attention-mass`'s CSV as a table: the share of attention per role...
    <!-- end generated -->

    <!-- generated: shares {"tasks": {"IOI": ["trace_smollm2/ioi/compare_k5.csv"]},
         "methods": {"greedy": "greedy", "PGB-CT": "pgbct"}} -->
    ...one row per task, one column per method: the mean over runs of the method's share in each of
    `catlit-trace-compare`'s CSVs for the task (several: "a / b"), with the number of runs...
    <!-- end generated -->

Paths are relative to docs/. `python scripts/docs_tables.py` rewrites every block of README.md and
docs/*.md from the files; `--check` writes nothing and fails, naming the page and the block, where
a page's table and its report disagree (the test suite runs it).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- generated: (\w+) (.*?) -->\n(.*?)<!-- end generated -->", re.DOTALL)
ROLES = {"cause": "causes", "spurious": "spurious cue", "unrelated": "unrelated", "prompt": "rest of prompt"}


def first_table(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first Markdown table in `text`."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise ValueError(f"{source}: holds no table")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return table[0], table[2:]


def render_rows(spec: dict, page: Path) -> str:
    column = spec.get("column", "model")
    header = None
    out = []
    for source in spec["from"]:
        path = DOCS / source["report"]
        cols, rows = first_table(path.read_text(), str(path))
        if header is None:
            header = cols
        elif cols != header:
            raise ValueError(f"{page}: {path} has columns {cols}, the table before it {header}")
        where, data = cols.index("setting"), cols.index("data")
        for wanted in source["settings"]:  # "setting", or "data | setting" where settings repeat
            data_wanted, _, setting = wanted.rpartition(" | ")
            found = [r for r in rows if r[where] == setting and data_wanted in ("", r[data])]
            if not found:
                have = [r[where] for r in rows]
                raise ValueError(f"{page}: {path} has no row with setting {wanted!r} (it has {have})")
            out.append([source["label"], *found[0]])
    lines = [f"| {column} | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in out]
    for cited in spec.get("cite", []):
        if len(cited) != len(header) + 1:
            raise ValueError(f"{page}: a cited row has {len(cited)} cells, the table {len(header) + 1}")
        lines.append("| " + " | ".join(cited) + " |")
    return "\n".join(lines) + "\n"


def render_mass(path: Path) -> str:
    """`catlit-attention-mass`'s CSV: one row per model, the share of the answer rows' attention per
    role (mean over runs), and causes / cue."""
    mass: dict[str, dict[str, float]] = defaultdict(dict)
    with path.open() as handle:
        for row in csv.DictReader(handle):
            mass[row["method"]][row["role"]] = float(row["mass"])
    lines = ["| model | " + " | ".join(ROLES.values()) + " | causes / cue |", "|---" * (len(ROLES) + 2) + "|"]
    for model, roles in mass.items():
        cells = [f"{100 * roles[r]:.1f}%" if r in roles else "-" for r in ROLES]
        ratio = roles["cause"] / roles["spurious"] if roles.get("spurious") else float("nan")
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {ratio:.1f} |")
    return "\n".join(lines) + "\n"


def render_shares(spec: dict, page: Path) -> str:
    """Each task's mean share per method over the runs of `catlit-trace-compare`'s CSVs (with the
    number of runs; "–": the method has no column there, it was not run on the task)."""
    methods, seen = spec["methods"], set()
    lines = ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task, files in spec["tasks"].items():
        tables = []
        for name in files:
            with (DOCS / name).open() as handle:
                tables.append(list(csv.DictReader(handle)))
        cells = []
        for column in methods.values():
            parts = []
            for rows in tables:
                values = [float(r[column]) for r in rows if r.get(column) not in (None, "", "nan")]
                seen.update([column] if rows and column in rows[0] else [])
                parts.append(f"{sum(values) / len(values):.3f} ({len(values)})" if values else "–")
            cells.append(" / ".join(parts) if any(p != "–" for p in parts) else "–")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    missing = [c for c in methods.values() if c not in seen]
    if missing:
        raise ValueError(f"{page}: no table of {sorted({f for fs in spec['tasks'].values() for f in fs})} "
                         f"has a column {missing}")  # fmt: skip
    return "\n".join(lines) + "\n"


def render(kind: str, argument: str, page: Path) -> str:
    if kind == "include":
        return (DOCS / argument).read_text().strip() + "\n"
    if kind == "rows":
        return render_rows(json.loads(argument), page)
    if kind == "mass":
        return render_mass(DOCS / argument)
    if kind == "shares":
        return render_shares(json.loads(argument), page)
    raise ValueError(f"{page}: unknown generated block {kind!r} (include, rows, mass, shares)")


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and the docs pages (the experiments' folders below docs/ hold the reports)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def regenerate(text: str, page: Path) -> tuple[str, list[str]]:
    """(the page with every block regenerated, the directives of the blocks that changed)."""
    changed = []

    def fill(match: re.Match) -> str:
        kind, argument, old = match.group(1), match.group(2), match.group(3)
        new = render(kind, argument, page)
        if new != old:
            changed.append(f"{kind} {argument[:80]}")
        return f"<!-- generated: {kind} {argument} -->\n{new}<!-- end generated -->"

    return BLOCK.sub(fill, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail where a table is stale")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        new, changed = regenerate(text, page)
        stale += [f"{page.relative_to(ROOT)}: {c}" for c in changed]
        if changed and not args.check:
            page.write_text(new)
    if args.check and stale:
        print("tables that disagree with their reports (run python scripts/docs_tables.py):", file=sys.stderr)
        print("\n".join(f"  {s}" for s in stale), file=sys.stderr)
        return 1
    print(f"{len(stale)} table(s) {'stale' if args.check else 'regenerated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
