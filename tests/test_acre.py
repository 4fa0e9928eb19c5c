"""The ACRE-style blicket generator, the OpenAI-evals reader, and the batch fields a method asks for."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter

import pytest
import torch

from catlit.data import acre_benchmark as bench
from catlit.data.acre import ACRE, COLOURS, SHAPES, held_out, infer
from catlit.data.collate import Collator
from catlit.data.encoding import ExampleEncoder
from catlit.data.evals import read_evals, write_evals
from catlit.data.example import DataError
from catlit.data.sources import ACRESource, EvalsSource
from tests.helpers.runs import compose_cfg

TEXT_OBJECT = re.compile(rf"the ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")
SYMBOLIC_OBJECT = re.compile(r"c(\d)s(\d)")


def objects(ex) -> set[tuple[int, int]]:
    if ex.meta["source"] == "text":
        return {(COLOURS.index(c), SHAPES.index(s)) for c, s in TEXT_OBJECT.findall(ex.input)}
    return {(int(c), int(s)) for c, s in SYMBOLIC_OBJECT.findall(ex.input)}


def test_blicket_inference_rules():
    a, b, c = (0, 1), (1, 1), (2, 3)
    trials, outcomes = ((a, b), (b,), (c,)), (True, False, True)
    assert infer(trials, outcomes, (a,)) == "on"  # b is cleared, so a lit the machine
    assert infer(trials, outcomes, (b,)) == "off"
    assert infer(((a, b),), (True,), (a,)) == "undetermined"  # a or b
    assert infer(trials, outcomes, (b, c)) == "on"  # a pair with a known blicket
    assert infer(((a,), (b,)), (False, False), (a, b)) == "off"


def test_small_acre_splits_are_seeded_balanced_disjoint_and_shifted():
    splits = ACRESource(seed=3, preset="small").load()
    again = ACRESource(seed=3, preset="small").load()
    assert [e.input for e in splits.train] == [e.input for e in again.train]
    assert [e.input for e in ACRESource(seed=4, preset="small").load().train] != [
        e.input for e in splits.train
    ]
    assert set(splits.test) == {"iid", "compositional", "systematic"}
    test_prompts = {e.input for rows in splits.test.values() for e in rows}
    assert not test_prompts & {e.input for e in splits.train + splits.val["iid"]}
    for name, rows in [("train", splits.train), *splits.test.items()]:
        answers, sources = Counter(e.target for e in rows), Counter(e.meta["source"] for e in rows)
        assert set(answers) == {"on", "off", "undetermined"} and min(answers.values()) > len(rows) / 5, name
        assert set(sources) == {"text", "symbolic"} and min(sources.values()) > len(rows) / 3, name
    train_objects = set().union(*(objects(e) for e in splits.train))
    assert not any(held_out(*o) for o in train_objects)
    assert all(held_out(*o) for e in splits.test["compositional"] for o in objects(e))
    assert all(len(objects(e)) <= 3 for e in splits.train)
    assert max(len(objects(e)) for e in splits.test["systematic"]) == 4
    assert all(e.input.count("Trial ") == 4 for e in splits.test["systematic"] if e.meta["source"] == "text")


def test_acre_answers_never_leak_into_prompts_and_causes_are_the_query_trials():
    gen = ACRE()
    rng = random.Random(0)
    for _ in range(200):
        ex = gen.sample(rng, "iid")
        if ex.meta["source"] == "text":
            assert not re.search(r"\b(on|off|undetermined)\b", ex.input)
        if not ex.important:  # the queried object is in no trial: nothing decides the answer
            assert ex.target == "undetermined"
            continue
        (link,) = ex.important
        assert link.effect == ex.target and link.causes
        assert all(cause in ex.input for cause in link.causes)


def test_acre_examples_encode_with_their_causal_mask(any_tokenizer):
    encoder = ExampleEncoder(any_tokenizer, max_length=1024, training=True)  # tokenizers trained on STG
    for preset in ("small", "acre"):
        rows = [encoder.encode(ex) for ex in ACRESource(seed=0, limit=40, preset=preset).load().train]
        assert sum(bool(r.blocks) for r in rows) >= 36, preset  # effect and causes found as whole words


def test_acre_bad_params_are_named():
    with pytest.raises(ValueError, match="encodings"):
        ACRE(encodings=("braille",))
    with pytest.raises(ValueError, match="unknown parameter"):
        ACRESource(params={"n_trails": 3}, preset="small")
    with pytest.raises(ValueError, match="not an ACRE preset"):
        ACRESource(preset="big")


# ---- OpenAI-evals files ----------------------------------------------------------------------------
def test_evals_files_round_trip_the_generator_with_one_source_per_file(tmp_path):
    rows = ACRESource(seed=0, limit=30).load().train
    for encoding in ("text", "symbolic"):
        write_evals([e for e in rows if e.meta["source"] == encoding], tmp_path / f"{encoding}.jsonl")
    back = EvalsSource(
        train={"text": str(tmp_path / "text.jsonl"), "symbolic": str(tmp_path / "symbolic.jsonl")},
        test={"iid": str(tmp_path / "text.jsonl")},
    ).load()
    expected = {(e.input, e.target, e.important, e.meta["source"]) for e in rows}
    assert {(e.input, e.target, e.important, e.meta["source"]) for e in back.train} == expected
    assert {e.meta["source"] for e in back.test["iid"]} == {"text"}  # a bare path: the file's stem
    assert list(back.val) == ["iid"]  # no val files: the first test split validates


def test_evals_reader_joins_messages_takes_the_first_ideal_and_names_bad_rows(tmp_path):
    path = tmp_path / "corr2cause.jsonl"
    good = {
        "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A?"}],
        "ideal": ["yes", "Yes"],
    }
    path.write_text(
        json.dumps(good) + "\n\n" + json.dumps({"input": [{"role": "user"}], "ideal": "no"}) + "\n"
    )
    with pytest.raises(DataError, match=r"corr2cause.jsonl:3: field 'input\[0\]'"):
        read_evals(path, "c2c")
    (first,) = read_evals(path, "c2c", limit=1)
    assert (first.input, first.target, first.meta) == (
        "Be brief.\nA?",
        "yes",
        {"source": "c2c", "ideals": ["yes", "Yes"]},
    )
    path.write_text(json.dumps({"input": [{"role": "user", "content": "A?"}]}) + "\n")
    with pytest.raises(DataError, match=r"corr2cause.jsonl:1: missing field 'ideal'"):
        read_evals(path, "c2c")


def test_data_evals_composes_and_names_sources(tmp_path):
    rows = ACRESource(seed=0, limit=20).load().train
    write_evals([e for e in rows if e.meta["source"] == "text"], tmp_path / "t.jsonl")
    write_evals([e for e in rows if e.meta["source"] == "symbolic"], tmp_path / "s.jsonl")
    cfg = compose_cfg(
        tmp_path,
        [
            "data=evals",
            f"data.train={{text: {tmp_path}/t.jsonl, symbolic: {tmp_path}/s.jsonl}}",
            f"data.test={{ood: {{symbolic: {tmp_path}/s.jsonl}}}}",
        ],
    )
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, fields=["source"])
    assert dm.source_names == ["symbolic", "text"]
    assert list(dm.test_names) == ["ood"]


# ---- the batch fields a method may ask for -------------------------------------------------------------
def test_collator_gives_source_ids_and_prompt_positions_when_asked(any_tokenizer):
    encoder = ExampleEncoder(any_tokenizer)
    examples = ACRESource(seed=0, limit=4, preset="small").load().train[:3]
    items = [(i, encoder.encode(e), e.target, i % 2) for i, e in enumerate(examples)]
    batch = Collator(any_tokenizer.pad_token_id, ["source", "prompt_positions"])(items)
    assert "causal_mask" not in batch
    assert batch["source"].tolist() == [0, 1, 0]
    for b, (_, row, _, _) in enumerate(items):
        assert batch["prompt_positions"][b].sum() == row.prompt_len
        assert batch["prompt_positions"][b, : row.prompt_len].all()
    assert (batch["labels"][batch["prompt_positions"]] == -100).all()
    with pytest.raises(ValueError, match="unknown field"):
        Collator(0, ["answer_mask"])
    assert torch.equal(Collator(0, [])([(0, items[0][1], "x")])["index"], torch.tensor([0]))


# ---- exact labels and the benchmark's process -------------------------------------------------------
def brute_force(panels, query) -> str:
    """The disjunctive rule by enumeration, written independently of catlit's `infer`."""
    objects = sorted({o for p, _ in panels for o in p} | set(query))
    answers = set()
    for size in range(len(objects) + 1):
        for blickets in itertools.combinations(objects, size):
            if all(any(o in blickets for o in p) == lit for p, lit in panels):
                answers.add(any(o in blickets for o in query))
    return {frozenset({True}): "on", frozenset({False}): "off"}.get(frozenset(answers), "undetermined")


@pytest.mark.parametrize("kind", ["iid", "compositional", "systematic"])
def test_small_acre_labels_are_exact_on_every_split(kind):
    from catlit.data.acre import _episode

    gen, rng = ACRE(), random.Random(kind)
    for _ in range(1500):
        episode = _episode(rng, gen.structure(kind), compositional=kind == "compositional")
        expected = brute_force(list(zip(episode.trials, episode.outcomes)), episode.query)
        assert episode.answer == expected, episode


def test_a_pair_that_exactly_lit_the_machine_is_on():
    a, b, c = (0, 1), (1, 1), (2, 3)
    assert infer(((a, b),), (True,), (a, b)) == "on"  # the case a single-object rule called undetermined
    assert infer(((a, b), (c,)), (True, False), (b, c)) == "undetermined"


@pytest.mark.parametrize("regime", ["IID", "Comp", "Sys"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_benchmark_labels_are_exact_and_the_process_agrees(regime, split):
    rng = random.Random(f"{regime}/{split}")
    for _ in range(800):
        problem = bench.sample_problem(rng, regime, split)
        panels = [(p.objects, p.light == "on") for p in problem.context]
        for query in problem.queries:  # the process's own label, its exact label, the brute force
            assert bench.LABELS[query.label] == brute_force(panels, query.objects)
            assert bench.label_of(problem, query) == query.label


def test_benchmark_problems_follow_its_generative_process():
    rng = random.Random(0)
    labels, types, sizes, objects = Counter(), Counter(), set(), set()
    for _ in range(2000):
        problem = bench.sample_problem(rng, "IID", "train")
        assert len(problem.context) == 6 and len(problem.queries) == 4 and problem.activated in (3, 4)
        objects.add(len({o for p in problem.context for o in p.objects}))
        for q in problem.queries:
            labels[q.label] += 1
            types[q.type] += 1
            sizes.add(len(q.objects))
    share = {bench.LABELS[k]: v / sum(labels.values()) for k, v in labels.items()}
    assert (
        abs(share["off"] - 0.37) < 0.03
        and abs(share["on"] - 0.37) < 0.03
        and abs(share["undetermined"] - 0.26) < 0.03
    )
    assert objects == {5, 6, 7, 8} and sizes == {1, 2, 3, 4, 5, 6} and set(types) == set(bench.QUERY_TYPES)
    # the systematic split is the number of activated panels: 3 in its training, 4 in its test
    assert {bench.sample_problem(rng, "Sys", "train").activated for _ in range(200)} == {3}
    assert {bench.sample_problem(rng, "Sys", "test").activated for _ in range(200)} == {4}
    assert not set(bench.ATTR_TRAIN) & set(bench.ATTR_TEST) and len(bench.ALL_KINDS) == 48


def test_the_acre_preset_records_query_types_and_renders_both_encodings():
    splits = ACRESource(seed=0, params={"n_train": 200, "n_val": 20, "n_test": 60}).load()
    for rows in [splits.train, *splits.test.values()]:
        assert {e.meta["query_type"] for e in rows} <= set(bench.QUERY_TYPES)
        assert {e.meta["source"] for e in rows} == {"text", "symbolic"}
    text = next(e for e in splits.train if e.meta["source"] == "text")
    symbolic = next(e for e in splits.train if e.meta["source"] == "symbolic")
    assert text.input.count("Panel ") == 6 and text.target in ("on", "off", "undetermined")
    assert re.fullmatch(r"ACRE (P\d \[[\d, ]+\] -> [02] ; ){6}Q \[[\d, ]+\] -> \? => ", symbolic.input)
    assert symbolic.target in ("0", "1", "2")
    assert {e.meta["activated"] for e in splits.test["systematic"]} <= {3, 4}


def test_the_raw_files_reader_reads_the_benchmarks_format(tmp_path):
    from catlit.data.sources import ACREFilesSource

    rng = random.Random(1)
    problems = {
        (regime, split): [bench.sample_problem(rng, regime, split) for _ in range(5)]
        for regime in bench.REGIMES
        for split in ("train", "val", "test")
    }
    root = bench.write_raw(tmp_path / "ACRE", problems)
    raw = json.loads((root / "Sys" / "test.json").read_text())
    assert len(raw) == 5 and len(raw[0]) == 10 and {"light_state", "objects"} <= set(raw[0][0])
    assert {"label", "type"} <= set(raw[0][6]) and "ref" in raw[0][8]
    splits = ACREFilesSource(dir=str(root)).load()
    assert len(splits.train) == 5 * 4 * 2 and set(splits.test) == {"iid", "compositional", "systematic"}
    first = problems["IID", "train"][0]
    answers = [e.target for e in splits.train[:8]]
    assert answers == [x for q in first.queries for x in (bench.LABELS[q.label], str(q.label))]
    names = " ".join(e.input for e in splits.test["compositional"] if e.meta["source"] == "text")
    assert "metal sphere" in names and "rubber sphere" not in names  # the held-out attribute table
    (root / "IID" / "train.json").write_text(json.dumps([[{"light_state": "on"}]]))
    with pytest.raises(DataError, match=r"IID/train.json: problem 0"):
        ACREFilesSource(dir=str(root)).load()
