"""Getting the `[{effect: [causes]}]` JSON out of a model's reply, whatever it wrapped it in."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(reply: str | None):
    """The annotation list in `reply` (bare, fenced, after prose, or under an "important" key), or None."""
    if not reply:
        return None
    candidates = [m.group(1) for m in _FENCE.finditer(reply)] + [reply]
    for text in candidates:
        text = text.strip()
        for start in [i for i, ch in enumerate(text) if ch in "[{"]:
            end_char = "]" if text[start] == "[" else "}"
            end = text.rfind(end_char)
            while end > start:
                try:
                    value = json.loads(text[start : end + 1])
                except json.JSONDecodeError:
                    end = text.rfind(end_char, start, end)
                    continue
                if isinstance(value, dict) and isinstance(value.get("important"), list):
                    return value["important"]
                if isinstance(value, list):
                    return value
                if isinstance(value, dict):
                    return [value]
                break
    return None
