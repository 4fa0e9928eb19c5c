"""Per-task answer extraction: a generated continuation -> is it the right answer?

Generation decodes only the new tokens, so the prompt is already gone. Scorers:
  exact / stg   the first line, exact match after stripping
  stg_h         the first number, equal to the integer target ("41" and "41.0" for 41; never "41.7")
  numeric       the first number after an optional "Answer:" (MAWPS, SVAMP, ASDiv: "84" == "84.0",
                "6 (bags)" == "6", "1,200" == "1200"); a target without a number ("Clara") as text
  gsm8k         the number after "####" (the last number if the generation has no "####")
  choice        the option label (ARC-E: "C", "C. mutualism", "(C)"; some questions number them 1-4)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?answer\s*(?:is)?\s*[:=]?\s*", re.IGNORECASE)
_CHOICE = re.compile(r"^\s*(?:answer\s*[:=]?\s*)?\(?([A-Ea-e1-9])(?:[).:\s]|$)", re.IGNORECASE)
_UNIT = re.compile(r"\s*\([^)]*\)\s*$")


def first_line(prediction: str) -> str:
    return prediction.strip().split("\n", 1)[0].strip()


def parse_number(text: str, last: bool = False) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float((found[-1] if last else found[0]).replace(",", ""))
    except ValueError:
        return None


def same_number(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def score_exact(prediction: str, target: str) -> bool:
    return first_line(prediction) == target.strip()


def score_integer(prediction: str, target: str) -> bool:
    """STG_H: the first number of the answer must be the integer target; a decimal that is not that
    integer ("41.7" for 41) is wrong, not truncated."""
    value = parse_number(first_line(prediction))
    return value is not None and value == int(float(target))


def _plain(text: str) -> str:
    return _UNIT.sub("", _ANSWER_PREFIX.sub("", text.strip())).strip(" .").casefold()


def score_numeric(prediction: str, target: str) -> bool:
    """Numbers compare as numbers; a target with no number (ASDiv's "Clara", "Yes") as plain text."""
    gold = parse_number(_ANSWER_PREFIX.sub("", target.strip()))
    if gold is None:
        return _plain(first_line(prediction)) == _plain(target)
    return same_number(parse_number(_ANSWER_PREFIX.sub("", first_line(prediction))), gold)


def gsm8k_answer(text: str) -> float | None:
    if "####" in text:
        return parse_number(text.rsplit("####", 1)[1])
    return parse_number(text, last=True)


def score_gsm8k(prediction: str, target: str) -> bool:
    return same_number(gsm8k_answer(prediction), gsm8k_answer(target))


def score_choice(prediction: str, target: str) -> bool:
    found = _CHOICE.match(prediction.strip())
    return found is not None and found.group(1).upper() == target.strip().upper()


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "exact": score_exact,
    "stg": score_exact,
    "stg_h": score_integer,
    "numeric": score_numeric,
    "gsm8k": score_gsm8k,
    "choice": score_choice,
}


def get_scorer(task: str) -> Callable[[str, str], bool]:
    if task not in SCORERS:
        raise ValueError(f"no scorer for task {task!r}; known: {sorted(SCORERS)}")
    return SCORERS[task]


def integer_error(prediction: str, target: str) -> float | None:
    """STG_H's absolute error |first number - target|, or None when the answer holds no number."""
    value = parse_number(first_line(prediction))
    return None if value is None else abs(value - float(target))


# tasks whose answers are quantities: their mean absolute error is reported beside exact match
ERRORS: dict[str, Callable[[str, str], float | None]] = {"stg_h": integer_error}


def get_error(task: str) -> Callable[[str, str], float | None] | None:
    return ERRORS.get(task)
