"""The front door: a short README whose commands are CI's, docs pages that build as a site with no
broken link, and results tables that are generated from the committed reports, never copied."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import docs_tables

HAS_MKDOCS = importlib.util.find_spec("mkdocs") is not None


def test_the_readme_is_short_and_runs_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for marker in ("# --- README: setup ---", "# --- README: test ---"):
        command = ci[ci.index(marker) + 1].replace(" -q ", " ")  # CI installs quietly
        assert command in readme, f"{marker}: {command!r} is not in README.md"
    for paper in ("arXiv:2509.01535", "Multi-component Causal Tracing", "Independent Causal Language Models"):
        assert paper in readme


def test_every_docs_table_agrees_with_its_report():
    stale = []
    for page in docs_tables.pages():
        _, changed = docs_tables.regenerate(page.read_text(), page)
        stale += [f"{page}: {c}" for c in changed]
    assert stale == []
    assert docs_tables.main(["--check"]) == 0


def test_a_table_that_drifts_from_its_report_is_caught():
    page = ROOT / "docs" / "results-cat.md"
    text = page.read_text()
    assert "<!-- generated: include cat_ood_smollm2/report.md -->" in text
    drifted = text.replace("| 92.5 ± 4.3 |", "| 95.5 ± 4.3 |", 1)  # a hand edit of one figure
    assert drifted != text
    _, changed = docs_tables.regenerate(drifted, page)
    assert changed == ["include cat_ood_smollm2/report.md"]
    with pytest.raises(ValueError, match="has no row with setting 'cat α=9'"):
        docs_tables.render_rows({"from": [{"report": "cat_ood_smollm2/report.md", "label": "x",
                                           "settings": ["cat α=9"]}]}, page)  # fmt: skip


def test_the_answer_table_is_the_mean_share_of_each_method_over_the_compare_csvs(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_tables, "DOCS", tmp_path)
    (tmp_path / "a.csv").write_text("run,size,all,pgbct,greedy\nseed 1,5,2.0,0.5,0.9\nseed 2,5,1.0,0.7,\n")
    (tmp_path / "b.csv").write_text("run,size,all,pgbct\nseed 1,50,3.0,0.25\n")
    spec = {"tasks": {"IOI": ["a.csv"], "Prof (50 / 200)": ["b.csv", "a.csv"]},
            "methods": {"PGB-CT": "pgbct", "greedy": "greedy"}}  # fmt: skip
    table = docs_tables.render_shares(spec, tmp_path / "page.md").splitlines()
    assert table[0] == "| task | PGB-CT | greedy |"
    assert table[2] == "| IOI | 0.600 (2) | 0.900 (1) |"  # a run without the method: not counted
    assert table[3] == "| Prof (50 / 200) | 0.250 (1) / 0.600 (2) | – / 0.900 (1) |"  # not run on b: –
    with pytest.raises(ValueError, match=r"has a column \['atp'\]"):  # a name no table has: a typo
        docs_tables.render_shares({**spec, "methods": {"AtP": "atp"}}, tmp_path / "page.md")


def test_results_tables_are_generated_not_typed():
    """A table of accuracies (an "IID acc" column) on any page lies inside a generated block."""
    typed = []
    for page in docs_tables.pages():
        outside = docs_tables.BLOCK.sub("", page.read_text())
        typed += [
            f"{page.name}: {line[:60]}" for line in outside.splitlines() if re.match(r"\|.*IID acc", line)
        ]
    assert typed == []


def build_site(docs: Path, config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True, text=True, cwd=docs.parent,
    )  # fmt: skip


@pytest.mark.skipif(not HAS_MKDOCS, reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_docs_build_strictly_and_a_broken_link_fails_the_build(tmp_path):
    done = build_site(ROOT / "docs", ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "results-cat" / "index.html").is_file()
    # a copy with one broken link must fail: the strict build bites
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "cat.md").open("a") as handle:
        handle.write("\nSee [the missing page](no-such-page.md).\n")
    broken = build_site(copy / "docs", copy / "mkdocs.yml", tmp_path / "site2")
    assert broken.returncode != 0 and "no-such-page.md" in broken.stderr
