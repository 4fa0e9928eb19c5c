"""`catlit-coverage`: how many annotated phrases become causal-mask entries, per JSONL file.

    catlit-coverage ../shared/cat-data            # every *.jsonl with annotations below the folder
    catlit-coverage a.jsonl b.jsonl --tokenizer /path/to/hf/checkpoint --max-length 1024

"in text" is the share of phrases that occur verbatim, as whole words, in input + target (the ceiling
for any matcher); the two "rejected" columns count what the whole-word rule turns away: phrases found
only inside longer words or numbers ('and' in 'Randy', '6.0' in '426.0'), and occurrences of that kind
(of any phrase) that a plain substring search would have marked; "matched" is the share that produced mask
entries with catlit's offset-based builder; a cause that occurs only after (or inside) its effect is
"not before effect" and is left out by design. "answer
effect matched" is the share of annotated rows where an effect overlapping the final answer (the last
line of the target: `#### 90`, `Answer: A`) became mask rows.
Without --tokenizer, the embedded byte-level BPE is trained on each file's own text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from catlit.data.encoding import ExampleEncoder, MaskCoverage
from catlit.data.jsonl import read_jsonl

COLUMNS = (
    "file",
    "rows",
    "annotated",
    "effects",
    "effect in text",
    "effect matched",
    "causes",
    "cause in text",
    "cause matched",
    "cause not before effect",
    "phrases only in longer words (rejected)",
    "occurrences in longer words (rejected)",
    "rows with mask",
    "answer effect matched",
)


def file_coverage(path: Path, tokenizer=None, max_length: int = 1024) -> MaskCoverage | None:
    examples = read_jsonl(path, bad_annotations="skip")
    annotated = [ex for ex in examples if ex.important]
    if not annotated:
        return None
    if tokenizer is None:
        from catlit.models.embedded import train_tokenizer

        tokenizer = train_tokenizer([ex.text for ex in examples])
    encoder = ExampleEncoder(tokenizer, max_length)
    for ex in annotated:
        encoder.encode(ex)
    encoder.coverage.add("rows", len(examples))
    return encoder.coverage


def coverage_row(name: str, cov: MaskCoverage) -> list[str]:
    c = cov.counts
    pct = lambda part, whole: f"{100 * cov.share(part, whole):.1f}%"  # noqa: E731
    return [
        name,
        str(c["rows"]),
        str(c["examples_annotated"]),
        str(c["effects"]),
        pct("effects_in_text", "effects"),
        pct("effects_matched", "effects"),
        str(c["causes"]),
        pct("causes_in_text", "causes"),
        pct("causes_matched", "causes"),
        pct("unmatched_not_before_effect", "causes"),
        str(c["unmatched_substring_only"]),
        str(c["substring_occurrences"]),
        pct("examples_masked", "examples_annotated"),
        pct("answer_effect_matched", "examples_annotated"),
    ]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="catlit-coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="JSONL files or folders searched for *.jsonl")
    parser.add_argument("--tokenizer", help="local HF checkpoint/tokenizer folder (default: embedded BPE)")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        from catlit.models.loading import check_local

        tokenizer = AutoTokenizer.from_pretrained(check_local(args.tokenizer), local_files_only=True)
    files: list[Path] = []
    for p in map(Path, args.paths):
        files += sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    rows = []
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)} (the released data: see docs/papers.md)")
    for f in files:
        cov = file_coverage(f, tokenizer, args.max_length)
        if cov is not None:
            rows.append(coverage_row(f.name, cov))
    if not rows:
        parser.error("no annotated rows (field 'important') in " + ", ".join(map(str, files)))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
