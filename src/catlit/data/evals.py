"""The OpenAI-evals JSONL format: `input` = a list of {role, content} messages, `ideal` = the answer.

Every file is one source (an encoding, a domain): its rows carry `meta["source"]`, which ICLM's
routing purity is measured against. The prompt is the messages' contents joined by newlines; an
`ideal` list gives its first entry as the training target (all of them are kept in
`meta["ideals"]`). An optional `important` field (the released CAT format) is read as in data=jsonl.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from catlit.data.example import DataError, Example, parse_important
from catlit.data.jsonl import iter_rows


def _messages(row: dict, where: str) -> str:
    if "input" not in row:
        raise DataError(f"{where}: missing field 'input' (fields present: {sorted(row)})")
    messages = row["input"]
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'input' must be a non-empty list of {{role, content}} messages")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field 'input[{i}]' must be an object with a string 'content'")
        if "role" in message and not isinstance(message["role"], str):
            raise DataError(f"{where}: field 'input[{i}].role' must be a string")
        parts.append(message["content"])
    return "\n".join(parts)


def _ideals(row: dict, where: str) -> list[str]:
    if "ideal" not in row:
        raise DataError(f"{where}: missing field 'ideal' (fields present: {sorted(row)})")
    ideal = row["ideal"]
    ideals = ideal if isinstance(ideal, list) else [ideal]
    if not ideals or not all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in ideals):
        raise DataError(f"{where}: field 'ideal' must be a string or a non-empty list of strings")
    return [str(x) for x in ideals]


def read_evals(path: str | Path, source: str, limit: int | None = None) -> list[Example]:
    """One evals file as examples of `source`; a malformed row raises a DataError naming file:line."""
    examples = []
    for where, row in iter_rows(path):
        ideals = _ideals(row, where)
        examples.append(
            Example(
                input=_messages(row, where),
                target=ideals[0],
                important=parse_important(row.get("important"), where),
                origin=where,
                meta={"source": source, "ideals": ideals},
            )
        )
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{path}: no examples (file is empty)")
    return examples


def write_evals(examples: Iterable[Example], path: str | Path, system: str | None = None) -> Path:
    """Examples as an evals file (one user message, or a system message before it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": ex.input}
            ]
            row = {"input": messages, "ideal": ex.target}
            if ex.important:
                row["important"] = ex.important_json()
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
