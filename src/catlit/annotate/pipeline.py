"""Annotate a JSONL file, incrementally and resumably.

The output is always a prefix of the input, one line per input row, in input order: rows that finish
out of order wait in memory until every earlier row is written, and each written line is flushed and
fsync'd. Re-running the same command resumes after the last complete line (a line torn by a kill is
cut off), so an interrupted run neither duplicates nor loses rows. Rows whose annotation failed are
written too, with `important: []` and an `annotation_error`, and counted in the summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from catlit.annotate.annotators import Proposal
from catlit.annotate.validate import validate_links
from catlit.data.example import DataError
from catlit.data.jsonl import example_from_row, iter_rows

log = logging.getLogger(__name__)


def resume_point(output: Path, rows: list[tuple[str, dict]], overwrite: bool) -> tuple[int, Counter]:
    """How many rows `output` already holds (checked against the input), and their counts."""
    counts: Counter = Counter()
    if not output.exists():
        return 0, counts
    if overwrite:
        backup = output.with_name(f"{output.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        output.rename(backup)  # never delete a user's annotations
        log.warning("overwrite=true: moved the existing %s to %s", output, backup)
        return 0, counts
    data = output.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        log.warning(
            "%s: cutting a torn last line (%d bytes) left by an interrupted run",
            output,
            len(data) - len(complete),
        )
        with output.open("r+b") as handle:
            handle.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    if len(lines) > len(rows):
        raise DataError(f"{output} holds {len(lines)} rows but the input has {len(rows)}: not its output")
    for i, line in enumerate(lines):
        done = json.loads(line)
        if done.get("input") != rows[i][1].get("input"):
            raise DataError(
                f"{output}:{i + 1} does not match input row {rows[i][0]}: this output belongs "
                "to another input (choose another output, or overwrite=true)"
            )
        counts[
            "rows_failed"
            if "annotation_error" in done
            else "rows_annotated"
            if done.get("important")
            else "rows_empty"
        ] += 1
    return len(lines), counts


def finish_row(raw: dict, example, proposal: Proposal, counts: Counter) -> dict:
    row = dict(raw)
    counts.update(proposal.counts)
    row.pop("annotation_error", None)
    if proposal.links is None:
        counts["rows_failed"] += 1
        row["important"], row["annotation_error"] = [], proposal.error or "unknown error"
        return row
    kept, link_counts = validate_links(example, proposal.links)
    counts.update(link_counts)
    row["important"] = [{link.effect: list(link.causes)} for link in kept]
    counts["rows_annotated" if kept else "rows_empty"] += 1
    return row


async def _annotate(rows, examples, start: int, annotator, output: Path, counts: Counter) -> None:
    size = max(int(getattr(annotator, "batch_size", 1)), 1)
    gate = asyncio.Semaphore(max(int(getattr(annotator, "concurrency", 1)), 1))
    finished: dict[int, dict] = {}
    next_row = start
    with output.open("a", encoding="utf-8") as handle:

        def flush() -> None:
            nonlocal next_row
            wrote = False
            while next_row in finished:
                handle.write(json.dumps(finished.pop(next_row), ensure_ascii=False) + "\n")
                next_row, wrote = next_row + 1, True
            if wrote:
                handle.flush()
                os.fsync(handle.fileno())

        async def run_batch(indices: range) -> None:
            async with gate:
                proposals = await annotator.annotate([examples[i] for i in indices])
            for i, proposal in zip(indices, proposals):
                finished[i] = finish_row(rows[i][1], examples[i], proposal, counts)
            flush()

        await asyncio.gather(
            *(run_batch(range(s, min(s + size, len(rows)))) for s in range(start, len(rows), size))
        )


def annotate_file(
    input_path: str | Path, output: str | Path, annotator, overwrite: bool = False, limit: int | None = None
) -> Counter:
    rows = list(iter_rows(input_path))[:limit]
    if not rows:
        raise DataError(f"{input_path}: no rows to annotate")
    # `important` already in the input is replaced, so malformed old entries are only counted
    examples = [example_from_row(raw, where, bad_annotations="skip") for where, raw in rows]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    start, counts = resume_point(output, rows, overwrite)
    counts["rows"] = len(rows)
    counts["rows_resumed"] = start
    if start:
        log.info("resuming %s after %d of %d rows", output, start, len(rows))
    asyncio.run(_annotate(rows, examples, start, annotator, output, counts))
    return counts


SUMMARY = [
    ("rows", "rows"),
    ("rows resumed (already in the output)", "rows_resumed"),
    ("rows annotated", "rows_annotated"),
    ("rows with no valid link", "rows_empty"),
    ("rows failed (reported in the output)", "rows_failed"),
    ("effects proposed", "effects_proposed"),
    ("effects kept", "effects_kept"),
    ("effects dropped: not in text", "effects_dropped_not_in_text"),
    ("effects dropped: no valid cause", "effects_dropped_no_cause"),
    ("causes proposed", "causes_proposed"),
    ("causes kept", "causes_kept"),
    ("causes dropped: not in text", "causes_dropped_not_in_text"),
    ("causes dropped: not before effect", "causes_dropped_not_before_effect"),
    ("malformed replies (re-asked)", "malformed_replies"),
    ("malformed entries skipped", "entries_malformed"),
]


def summary_table(counts: Counter) -> str:
    lines = ["| | count |", "|---|---|"]
    lines += [f"| {label} | {counts[key]} |" for label, key in SUMMARY]
    retries = {k.removeprefix("api_"): v for k, v in sorted(counts.items()) if k.startswith("api_")}
    lines.append(f"| API errors retried or failed | {sum(retries.values())} {retries or ''} |")
    covered = counts["rows_annotated"] / counts["rows"] if counts["rows"] else 0.0
    kept = counts["causes_kept"] / counts["causes_proposed"] if counts["causes_proposed"] else 0.0
    lines.append(f"| coverage: rows annotated / causes kept | {100 * covered:.1f}% / {100 * kept:.1f}% |")
    return "\n".join(lines)
