"""The released JSONL format: real files load; every bad row is named by file, line and field."""

from __future__ import annotations

import json
import logging

import pytest

from catlit.data.example import DataError
from catlit.data.jsonl import read_jsonl, write_jsonl


def write(tmp_path, lines: list[str]):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"input": "Q: 1+1? Answer: ", "target": "2", "important": [{"2": ["1+1"]}]})


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", r"rows.jsonl:2: malformed JSON"),
        (json.dumps({"target": "x"}), r"rows.jsonl:2: missing field 'input'"),
        (json.dumps({"input": "x"}), r"rows.jsonl:2: missing field 'target'"),
        (json.dumps({"input": ["x"], "target": "y"}), r"rows.jsonl:2: field 'input' must be a string"),
        (json.dumps([1, 2]), r"rows.jsonl:2: expected a JSON object"),
        (
            json.dumps({"input": "a", "target": "b", "important": {"b": ["a"]}}),
            r"rows.jsonl:2: field 'important' must be a list",
        ),
        (
            json.dumps({"input": "a", "target": "b", "important": [["b", "a"]]}),
            r"rows.jsonl:2: field 'important\[0\]' must be a non-empty",
        ),
        (
            json.dumps({"input": "a", "target": "b", "important": [{"b": {"c": ["a"]}}]}),
            r"rows.jsonl:2: field 'important\[0\]'\['b'\] must be a list of cause strings",
        ),
        (
            json.dumps({"input": "a", "target": "b", "important": [{"b": [" "]}]}),
            r"rows.jsonl:2: field 'important\[0\]' has an empty phrase",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, line, message):
    with pytest.raises(DataError, match=message):
        read_jsonl(write(tmp_path, [GOOD, line]))


def test_unambiguous_variants_are_accepted_and_numbers_become_strings(tmp_path):
    row = {"input": "a b c ", "target": 7, "important": [{"7": "a"}, {"b": ["a"], "c": []}]}
    (ex,) = read_jsonl(write(tmp_path, [json.dumps(row)]))
    assert ex.target == "7" and ex.origin.endswith("rows.jsonl:1")
    assert [(link.effect, link.causes) for link in ex.important] == [("7", ("a",)), ("b", ("a",)), ("c", ())]


def test_skip_mode_drops_bad_entries_with_a_counted_warning(tmp_path, caplog):
    row = {"input": "a b", "target": "c", "important": [{"c": ["a"]}, {"c": {"x": ["b"]}}]}
    with caplog.at_level(logging.WARNING):
        (ex,) = read_jsonl(write(tmp_path, [json.dumps(row)]), bad_annotations="skip")
    assert len(ex.important) == 1
    assert (
        "skipped 1 malformed 'important' entry" in caplog.text and "rows.jsonl:1: important[1]" in caplog.text
    )


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no examples"):
        read_jsonl(write(tmp_path, [""]))


def test_round_trip(tmp_path):
    rows = read_jsonl(write(tmp_path, [GOOD, GOOD]))
    again = read_jsonl(write_jsonl(rows, tmp_path / "out.jsonl"))
    assert [(e.input, e.target, e.important) for e in again] == [
        (e.input, e.target, e.important) for e in rows
    ]


@pytest.mark.released_data
def test_released_stg_files_load(released_data):
    stg = released_data / "STG"
    train = read_jsonl(stg / "spurious_token_game_train3.jsonl")
    assert len(train) == 1600 and all(ex.important for ex in train)
    assert (
        read_jsonl(stg / "spurious_token_game_train3_S.jsonl") == train[:400]
        or len(read_jsonl(stg / "spurious_token_game_train3_S.jsonl")) == 400
    )
    assert len(read_jsonl(stg / "spurious_token_game_ood3_2.jsonl")) == 400
    assert {e.target for e in train} == {"High Risk", "Low Risk", "Middle Risk"}


@pytest.mark.released_data
def test_released_gsm8k_nested_entry_is_reported(released_data):
    path = released_data / "GSM8K" / "gsm8k_val.jsonl"
    with pytest.raises(DataError, match=r"gsm8k_val.jsonl:254: field 'important\[0\]'"):
        read_jsonl(path)
    assert len(read_jsonl(path, bad_annotations="skip")) == 1319
