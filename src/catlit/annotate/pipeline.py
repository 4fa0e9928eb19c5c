"""Annotate a JSONL file, incrementally and resumably.

The output is always a prefix of the input, one line per input row, in input order: rows that finish
out of order wait in memory until every earlier row is written, and each written line is flushed and
fsync'd. Re-running the same command resumes after the last complete line (a line torn by a kill is
cut off), so an interrupted run neither duplicates nor loses rows. Rows whose annotation failed are
written too, with `important: []` and an `annotation_error`, counted in the summary, and asked again
by the next run (the file is then rewritten atomically).

Beside the output: `<output>.lock` (held while a run writes; a second run on the same output is
refused), `<output>.meta.json` (which annotator and prompt produced it; a run with another one is
refused instead of "resuming" someone else's annotations) and `<output>.summary.json` (counts over
the whole output plus each run's own counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from catlit.annotate.annotators import Proposal
from catlit.annotate.validate import marked_share, validate_links
from catlit.data.example import DataError
from catlit.data.jsonl import example_from_row, iter_rows

log = logging.getLogger(__name__)


def sidecar(output: Path, kind: str) -> Path:
    return output.with_name(f"{output.name}.{kind}")


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """An exclusive lock on `<output>.lock` for the whole run (released by the OS if the run dies)."""
    lock_path = sidecar(output, "lock")
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid unknown"
            raise DataError(
                f"{output} is being written by another annotation run ({holder}); "
                "wait for it or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


def back_up(output: Path) -> Path:
    """Move `output` and its sidecars aside under a name no earlier backup has (never overwrite one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        suffix = f".bak-{stamp}" + (f"-{n}" if n else "")
        backup = output.with_name(output.name + suffix)
        if not backup.exists():
            break
        n += 1
    output.rename(backup)
    for kind in ("meta.json", "summary.json"):
        if sidecar(output, kind).exists():
            sidecar(output, kind).rename(sidecar(backup, kind))
    return backup


def check_identity(output: Path, identity: dict | None) -> None:
    """Refuse to continue an output that another annotator or prompt started; record ours on a new one."""
    meta = sidecar(output, "meta.json")
    if identity is None:
        return
    if output.exists() and output.stat().st_size and meta.exists():
        recorded = json.loads(meta.read_text()).get("produced_by")
        if recorded != identity:
            changed = sorted(
                k for k in set(recorded or {}) | set(identity) if (recorded or {}).get(k) != identity.get(k)
            )
            raise DataError(
                f"{output} was started by another annotator or prompt ({', '.join(changed)} differ; "
                f"see {meta}): choose another output, or overwrite=true to move it aside"
            )
    elif output.exists() and output.stat().st_size:
        log.warning("%s has no %s: cannot check which annotator produced it; continuing", output, meta.name)
    meta.write_text(json.dumps({"produced_by": identity}, indent=2, sort_keys=True))


def row_status(row: dict) -> str:
    return (
        "rows_failed"
        if "annotation_error" in row
        else "rows_annotated"
        if row.get("important")
        else "rows_empty"
    )


def resume_point(output: Path, rows: list[tuple[str, dict]], overwrite: bool) -> tuple[int, list[int]]:
    """How many rows `output` already holds (checked against the input), and which of them failed."""
    if not output.exists():
        return 0, []
    if overwrite:
        backup = back_up(output)  # never delete a user's annotations
        log.warning("overwrite=true: moved the existing %s to %s", output, backup)
        return 0, []
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
    failed = []
    for i, line in enumerate(lines):
        done = json.loads(line)
        if done.get("input") != rows[i][1].get("input"):
            raise DataError(
                f"{output}:{i + 1} does not match input row {rows[i][0]}: this output belongs "
                "to another input (choose another output, or overwrite=true)"
            )
        if "annotation_error" in done:
            failed.append(i)
    return len(lines), failed


def finish_row(raw: dict, example, proposal: Proposal, counts: Counter, max_cause_share: float = 1.0) -> dict:
    row = dict(raw)
    counts.update(proposal.counts)
    row.pop("annotation_error", None)
    if proposal.links is None:
        counts["rows_failed"] += 1
        row["important"], row["annotation_error"] = [], proposal.error or "unknown error"
        return row
    kept, link_counts = validate_links(example, proposal.links)
    counts.update(link_counts)
    share = marked_share(example, kept)
    if share > max_cause_share:  # a reply that calls (nearly) everything a cause says nothing
        counts["rows_failed"] += 1
        counts["rows_dropped_overmarked"] += 1
        row["important"] = []
        row["annotation_error"] = (
            f"over-marked: the causes cover {100 * share:.0f}% of the input's words "
            f"(max_cause_share={max_cause_share})"
        )
        return row
    row["important"] = [{link.effect: list(link.causes)} for link in kept]
    counts["rows_annotated" if kept else "rows_empty"] += 1
    return row


class Progress:
    """A log line every 5% of the rows (or every 30 s): rows done, rate and time left."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.started_at = total, done, done
        self.t0 = self.last = time.time()
        self.step = max(total // 20, 1)

    def advance(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        now = time.time()
        if self.done // self.step == before // self.step and now - self.last < 30 and self.done < self.total:
            return
        self.last = now
        rate = (self.done - self.started_at) / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate else float("inf")
        log.info(
            "annotated %d/%d rows (%.0f%%), %.2f rows/s, about %.0f s left",
            self.done,
            self.total,
            100 * self.done / self.total,
            rate,
            left,
        )


async def _annotate_rows(
    indices: list[int], rows, examples, annotator, counts: Counter, on_done, cap=1.0
) -> None:
    """Annotate rows[i] for i in `indices` in batches, calling on_done(i, row) as each finishes."""
    size = max(int(getattr(annotator, "batch_size", 1)), 1)
    gate = asyncio.Semaphore(max(int(getattr(annotator, "concurrency", 1)), 1))

    async def run_batch(batch: list[int]) -> None:
        async with gate:
            proposals = await annotator.annotate([examples[i] for i in batch])
        for i, proposal in zip(batch, proposals):
            on_done(i, finish_row(rows[i][1], examples[i], proposal, counts, cap))

    await asyncio.gather(*(run_batch(indices[s : s + size]) for s in range(0, len(indices), size)))


def _retry_failed(
    failed: list[int], rows, examples, annotator, output: Path, counts: Counter, cap=1.0
) -> None:
    """Ask again for rows an earlier run could not annotate; rewrite the output atomically."""
    retried: dict[int, dict] = {}
    asyncio.run(_annotate_rows(failed, rows, examples, annotator, counts, retried.__setitem__, cap))
    lines = output.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, row in retried.items():
        lines[i] = json.dumps(row, ensure_ascii=False) + "\n"
    tmp = sidecar(output, "rewrite.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, output)  # a kill before this line leaves the old output whole


def _append(start: int, rows, examples, annotator, output: Path, counts: Counter, progress, cap=1.0) -> None:
    finished: dict[int, dict] = {}
    next_row = start
    with output.open("a", encoding="utf-8") as handle:

        def on_done(i: int, row: dict) -> None:
            nonlocal next_row
            finished[i] = row
            wrote = 0
            while next_row in finished:
                handle.write(json.dumps(finished.pop(next_row), ensure_ascii=False) + "\n")
                next_row, wrote = next_row + 1, wrote + 1
            if wrote:
                handle.flush()
                os.fsync(handle.fileno())
                progress.advance(wrote)

        todo = list(range(start, len(rows)))
        asyncio.run(_annotate_rows(todo, rows, examples, annotator, counts, on_done, cap))


def annotate_file(
    input_path: str | Path,
    output: str | Path,
    annotator,
    overwrite: bool = False,
    limit: int | None = None,
    identity: dict | None = None,
    retry_failed: bool = True,
    max_cause_share: float = 1.0,
) -> Counter:
    """Annotate `input_path` into `output`; returns this run's counts, with the whole output's row
    counts under `output_*` keys. `identity` (annotator + prompt) is recorded and checked on resume."""
    rows = list(iter_rows(input_path))[:limit]
    if not rows:
        raise DataError(f"{input_path}: no rows to annotate")
    # `important` already in the input is replaced, so malformed old entries are only counted
    examples = [example_from_row(raw, where, bad_annotations="skip") for where, raw in rows]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter(rows=len(rows))
    with output_lock(output):
        start, failed = resume_point(output, rows, overwrite)
        check_identity(output, identity)
        counts["rows_resumed"] = start - (len(failed) if retry_failed else 0)
        if start:
            log.info("resuming %s after %d of %d rows", output, start, len(rows))
        if failed and retry_failed:
            log.info("asking again for %d row(s) that failed in an earlier run", len(failed))
            counts["rows_retried"] = len(failed)
            _retry_failed(failed, rows, examples, annotator, output, counts, max_cause_share)
        _append(start, rows, examples, annotator, output, counts, Progress(len(rows), start), max_cause_share)
        whole = Counter(
            row_status(json.loads(line)) for line in output.read_text(encoding="utf-8").splitlines()
        )
        counts.update({f"output_{k}": whole[k] for k in ("rows_annotated", "rows_empty", "rows_failed")})
        write_summary(output, counts, identity)
    return counts


def write_summary(output: Path, counts: Counter, identity: dict | None) -> None:
    """`<output>.summary.json`: the whole output's row counts and every run's own counts (appended)."""
    path = sidecar(output, "summary.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    runs = previous.get("runs", []) if isinstance(previous.get("runs"), list) else []
    this_run = {k: v for k, v in sorted(counts.items()) if not k.startswith("output_")}
    runs.append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "produced_by": identity, "counts": this_run})
    output_counts = {k.removeprefix("output_"): v for k, v in counts.items() if k.startswith("output_")}
    path.write_text(json.dumps({"output": {"rows": counts["rows"], **output_counts}, "runs": runs}, indent=2))


SUMMARY = [
    ("rows", "rows"),
    ("rows resumed (already in the output)", "rows_resumed"),
    ("rows retried (failed in an earlier run)", "rows_retried"),
    ("rows annotated", "rows_annotated"),
    ("rows with no valid link", "rows_empty"),
    ("rows failed (reported in the output)", "rows_failed"),
    ("  of which over-marked (causes > max_cause_share of the words)", "rows_dropped_overmarked"),
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
    if "output_rows_annotated" in counts:  # the whole output, earlier runs included
        whole = [counts[f"output_{k}"] for k in ("rows_annotated", "rows_empty", "rows_failed")]
        lines.append(
            "| whole output: annotated / no valid link / failed | " + " / ".join(map(str, whole)) + " |"
        )
    covered = counts["output_rows_annotated"] / counts["rows"] if counts["rows"] else 0.0
    kept = counts["causes_kept"] / counts["causes_proposed"] if counts["causes_proposed"] else 0.0
    lines.append(
        f"| coverage: output rows annotated / causes kept | {100 * covered:.1f}% / {100 * kept:.1f}% |"
    )
    return "\n".join(lines)
