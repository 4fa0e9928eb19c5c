"""Per-task answer extraction: a generated continuation -> is it the right answer?

Generation decodes only the new tokens, so the prompt is already gone; each scorer reads the first
line of the continuation.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_INT = re.compile(r"[-+]?\d+")


def first_line(prediction: str) -> str:
    return prediction.strip().split("\n", 1)[0].strip()


def score_exact(prediction: str, target: str) -> bool:
    return first_line(prediction) == target.strip()


def score_integer(prediction: str, target: str) -> bool:
    """STG_H: the first integer in the answer, compared as a string with the integer target."""
    found = _INT.search(first_line(prediction))
    return found is not None and str(int(found.group())) == str(int(float(target)))


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "exact": score_exact,
    "stg": score_exact,
    "stg_h": score_integer,
}


def get_scorer(task: str) -> Callable[[str, str], bool]:
    if task not in SCORERS:
        raise ValueError(f"no scorer for task {task!r}; known: {sorted(SCORERS)}")
    return SCORERS[task]
