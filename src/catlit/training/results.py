"""The printed results table: accuracy (and, for quantity tasks, mean absolute error) per split."""

from __future__ import annotations


def format_table(metrics: dict[str, float]) -> str:
    """One row per stage and figure, one column per split (IID first)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] in ("acc", "mae"):
            rows.setdefault((parts[0], parts[2]), {})[parts[1]] = value
    splits = sorted({s for r in rows.values() for s in r}, key=lambda s: (s != "iid", s))
    lines = ["| stage | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for stage in ("val", "test"):
        # an MAE over no answer with a number is nan: shown as "-" (the `no_number` share says why)
        mae = lambda v: f"{v:.2f}" if v == v else "-"  # noqa: E731
        for figure, show in (("acc", lambda v: f"{100 * v:.1f}%"), ("mae", mae)):
            if (stage, figure) in rows:
                cells = [show(rows[stage, figure][s]) if s in rows[stage, figure] else "-" for s in splits]
                lines.append(f"| {stage} {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
