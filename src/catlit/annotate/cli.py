"""The annotation recipe behind `python annotate.py input=rows.jsonl [annotator=...] [demos=...]`
(its Hydra main is `catlit.cli.annotate_main`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)
IDENTITY = ("_target_", "model", "path", "temperature", "max_tokens", "max_new_tokens")


def default_output(cfg) -> Path:
    """A stable path, so re-running the same command resumes: outputs/annotations/<stem>.annotated.jsonl"""
    return Path(cfg.paths.log_dir) / "annotations" / f"{Path(cfg.input).stem}.annotated.jsonl"


def run_annotation(cfg):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from catlit.annotate.pipeline import annotate_file, summary_table
    from catlit.annotate.prompt import SYSTEM, TEMPLATE, PromptBuilder
    from catlit.errors import check_rules, integer, number

    check_rules(  # before anything is asked of a (paid) annotator
        cfg,
        {
            "max_cause_share": (number(lambda v: 0 < v <= 1), "a number in (0, 1]"),
            "limit": (lambda v: v is None or integer(lambda k: k >= 1)(v), "null or an integer >= 1"),
        },
    )
    demos = OmegaConf.to_container(cfg.demos.examples, resolve=True) if cfg.get("demos") else []
    prompt = PromptBuilder(cfg.prompt.system or SYSTEM, cfg.prompt.template or TEMPLATE, demos)
    # partial, then call: passed through instantiate, the dataclass would become a config node
    annotator = instantiate(cfg.annotator, _partial_=True)(prompt=prompt)
    output = Path(cfg.output) if cfg.output else default_output(cfg)
    # what decides whether earlier rows are reusable: who annotates, with which prompt and demos
    # (not timeouts, concurrency or the server's address, which a rerun may change)
    settings = OmegaConf.to_container(cfg.annotator, resolve=True)
    identity = {
        "annotator": {k: settings[k] for k in IDENTITY if k in settings},
        "prompt_sha256": prompt.fingerprint(),
        "demos": len(demos),
    }
    counts = annotate_file(
        cfg.input,
        output,
        annotator,
        overwrite=cfg.overwrite,
        limit=cfg.limit,
        identity=identity,
        retry_failed=cfg.get("retry_failed", True),
        max_cause_share=cfg.get("max_cause_share", 1.0),
    )
    table = summary_table(counts)
    print(f"\nAnnotated {cfg.input} -> {output}\n{table}\n", flush=True)
    failed = counts.get("output_rows_failed", 0)
    if failed:  # the run finished, but not every row has an annotation: say so in the exit status
        print(
            f"error: {failed} of {counts['rows']} rows failed (their `annotation_error` says why); "
            "rerun the same command to ask again for them",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)
    return counts
