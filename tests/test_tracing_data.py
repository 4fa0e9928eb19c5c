"""Tracing pair readers (on the shared WinoBias / Winogender / Professions files), STG pairs, sources."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from catlit.data.example import DataError
from catlit.models.architectures import Layout
from catlit.models.embedded import train_tokenizer
from catlit.tracing import datasets
from catlit.tracing.components import ComponentSpace
from catlit.tracing.curve import main as curve_main
from catlit.tracing.engine import Tracer
from catlit.tracing.pairs import collate, encode_pairs
from tests.helpers.tracing import random_pairs, tiny_model


@pytest.mark.parametrize(("split", "kept", "skipped"), [("dev", 160, 38), ("test", 130, 68)])
def test_winobias_pairs_and_skip_rules(pgbct_data, caplog, split, kept, skipped):
    with caplog.at_level(logging.INFO, logger="catlit.tracing.datasets"):
        pairs = datasets.winobias(pgbct_data / "winobias", split)
    assert len(pairs) == kept
    assert f"{kept} pairs, {skipped} skipped" in caplog.text
    for pair in pairs:
        assert pair.base.rsplit(" ", 1)[1] in ("she", "her")
        assert pair.source.rsplit(" ", 1)[1] == {"she": "he", "her": "his"}[pair.base.rsplit(" ", 1)[1]]
        assert pair.base.rsplit(" ", 1)[0] == pair.source.rsplit(" ", 1)[0]
        assert "[" not in pair.base + "".join(pair.candidates)
        assert pair.candidates[0] != pair.candidates[1]
    first = pairs[0]  # dev lines 5-6: the mover (male) / the housekeeper (female)
    if split == "dev":
        assert first.base == "The mover said thank you to the housekeeper because she"
        assert first.candidates == (" is grateful.", " cleaned the truck.")


def test_winogender_pairs_follow_the_occupation_statistics(pgbct_data):
    pairs = datasets.winogender(pgbct_data / "winogender")
    assert len(pairs) == 44  # 88 rows of the structure-filtered file
    technician = pairs[0]  # 9% women: "he" refers to the technician in the male continuation
    assert technician.base == "The technician told the customer that she"
    assert technician.source == "The technician told the customer that he"
    assert technician.candidates == (" had completed the repair.", " could pay with cash.")
    assert all("$" not in p.base + p.source for p in pairs)


def test_professions_pairs_and_alignment(pgbct_data, stg_corpus):
    pairs = datasets.professions(pgbct_data / "professions")
    assert len(pairs) == 17 * (29 + 130)
    female = [p for p in pairs if p.meta["stereotype"] == "female"]
    assert female[0].source.startswith("The man ") and female[0].candidates == (" he", " she")
    tok = train_tokenizer([*stg_corpus, *(p.base for p in pairs[::17])])
    encoded, skipped = encode_pairs(tok, pairs, misaligned="skip")
    assert skipped > 0 and len(encoded) + skipped == len(pairs)  # multi-token professions are counted
    assert all(len(e.seqs[0]) == len(e.source_seqs[0]) for e in encoded)


def test_ioi_pairs_follow_the_templates_and_their_counterfactuals():
    abc, flip = datasets.ioi(40, seed=3), datasets.ioi(40, seed=3, counterfactual="s2_io_flip")
    assert [p.source for p in abc] == [p.source for p in flip] == [p.source for p in datasets.ioi(40, seed=3)]
    assert {p.meta["order"] for p in abc} == {"ABBA", "BABA"} and len({p.meta["template"] for p in abc}) == 8
    for a, f in zip(abc, flip):
        io, subject = (c.strip() for c in a.candidates)
        words = a.source.replace(",", " ").replace(".", " ").split()
        assert words.count(subject) == 2 and words.count(io) == 1 and words[-1] == "to"
        fresh = set(a.base.replace(",", " ").replace(".", " ").split())
        assert not {io, subject} & fresh  # ABC: three fresh names
        assert f.base == a.source[::-1].replace(subject[::-1], io[::-1], 1)[::-1]  # the second S becomes IO
    with pytest.raises(ValueError, match="counterfactual='bca'"):
        datasets.ioi(2, counterfactual="bca")


def test_stg_pairs_change_only_the_named_variable():
    for change in ("spurious", "cause"):
        pairs = datasets.stg_pairs("toy", n=40, change=change, seed=3)
        assert len(pairs) == 40
        for p in pairs:
            name, old, new = p.meta["variable"], p.meta["old"], p.meta["new"]
            assert p.source == p.base.replace(f"{name}: {old}", f"{name}: {new}", 1) and old != new
            assert set(p.candidates) == {"High Risk", "Low Risk"}
        if change == "spurious":  # the favoured label is the one the new value signals in training
            assert all((p.meta["new"] > 5) == (p.candidates[0] == "High Risk") for p in pairs)
    with pytest.raises(ValueError, match="spurious_mode=label"):
        datasets.stg_pairs("released", n=2)


def test_counterfact_and_jsonl_readers_name_file_and_field(tmp_path):
    record = {"requested_rewrite": {"prompt": "{} plays the sport of", "subject": "LeBron James"}}
    record["requested_rewrite"]["target_true"] = {"str": "basketball"}
    file = tmp_path / "counterfact.json"
    file.write_text(json.dumps([record, {"requested_rewrite": {"prompt": "x"}}]))
    with pytest.raises(DataError, match=r"counterfact.json:record 1: missing field 'subject'"):
        datasets.counterfact(file)
    (pair,) = datasets.counterfact(file, limit=1, noise="subject")
    assert pair.base == "LeBron James plays the sport of" and pair.candidates == (" basketball",)
    assert pair.base[slice(*pair.noise_span)] == "LeBron James"
    (pair,) = datasets.counterfact(file, limit=1)  # as released: every prompt token
    assert pair.base[slice(*pair.noise_span)] == pair.base
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"base": "a b", "candidates": ["c"]}\n{"base": "a b", "candidates": "c"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:2: field 'candidates'"):
        datasets.jsonl(jsonl)
    jsonl.write_text('{"base": "a b", "candidates": ["c"], "noise": "zz"}\n')
    with pytest.raises(DataError, match=r"pairs.jsonl:1: field 'noise' must be a substring"):
        datasets.jsonl(jsonl)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.winobias(tmp_path / "nowhere")


def test_noise_source_is_one_fixed_draw_per_pair_whatever_the_batch():
    model = tiny_model("llama")
    space = ComponentSpace(Layout(model), "heads")
    pairs = random_pairs(n=4)
    pairs[1].seqs[0] = pairs[1].seqs[0][:5]  # a shorter pair: the others get padded
    pairs[1].scores = [(0, 4, 7, 0), (0, 4, 9, 1)]
    pairs[1].prompt_lens = [5]
    tracer = Tracer(model, space, pairs, pad_id=0, source="noise", seed=1)
    alone = tracer.source_cache(tracer.batch([0]))
    together = tracer.source_cache(tracer.batch([1, 0, 2]))
    for key, value in alone.items():
        torch.testing.assert_close(together[key][1, : value.shape[1]], value[0], atol=1e-5, rtol=1e-5)
    assert tracer.evaluate(space.full(1.0), tracer.prepare([0, 2, 3])) != 0.0


def test_noise_source_shares_one_draw_between_the_candidates_of_a_pair():
    model = tiny_model("llama")
    space = ComponentSpace(Layout(model), "heads")
    pair = random_pairs(n=1)[0]
    prompt = pair.seqs[0][:-1]
    # two multi-token candidates: one sequence each, the same prompt
    pair.seqs, pair.source_seqs = [[*prompt, 11, 12], [*prompt, 13, 14, 15]], None
    pair.prompt_lens = [len(prompt)] * 2
    n = len(prompt)
    pair.scores = [(0, n - 1, 11, 0), (0, n, 12, 0), (1, n - 1, 13, 1), (1, n, 14, 1), (1, n + 1, 15, 1)]
    pair.noised = [[1, 2], [1, 2]]
    tracer = Tracer(model, space, [pair], pad_id=0, source="noise", seed=3)
    batch = tracer.batch([0])
    seen = []
    embeddings = model.get_input_embeddings()
    with tracer._noised_embeddings(batch):
        handle = embeddings.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
        with handle:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    noise = seen[0] - embeddings(batch.input_ids)
    torch.testing.assert_close(noise[0, :n], noise[1, :n])  # both candidates read one corrupted prompt
    assert noise[0, 1:3].abs().sum() > 0 and noise[:, 0].abs().sum() == 0 and noise[:, 3:].abs().sum() == 0


def test_winogender_occupation_at_exactly_half_women_is_male(pgbct_data, tmp_path):
    folder = tmp_path / "winogender"
    folder.mkdir()
    stats = (pgbct_data / "winogender" / "winogender_occupation_stats.tsv").read_text().splitlines()
    stats = [stats[0], *("\t".join([r.split("\t")[0], "50.0", *r.split("\t")[2:]]) for r in stats[1:])]
    (folder / "winogender_occupation_stats.tsv").write_text("\n".join(stats) + "\n")
    table = pgbct_data / "winogender" / "winogender_templates_structurefilter.tsv"
    (folder / table.name).write_text(table.read_text())
    technician = datasets.winogender(folder)[0]  # at 50% the occupation's continuation is the male one
    assert technician.candidates == (" had completed the repair.", " could pay with cash.")
    assert technician.meta["pct_female"] == 50.0
    stats = [stats[0], *(r.replace("\t50.0\t", "\t50.01\t", 1) for r in stats[1:])]
    (folder / "winogender_occupation_stats.tsv").write_text("\n".join(stats) + "\n")
    assert datasets.winogender(folder)[0].candidates == (
        " could pay with cash.",
        " had completed the repair.",
    )


def test_positions_select_the_intended_tokens():
    pairs = random_pairs(n=2, length=6, change_at=2)
    batch = collate(pairs, [0, 1], pad_id=0)
    assert batch.positions("last").nonzero()[:, 1].tolist() == [5, 5]
    assert batch.positions("changed").nonzero()[:, 1].tolist() == [2, 2]
    assert batch.positions("context").all() and batch.positions("all").all()
    with pytest.raises(ValueError, match="positions='first'"):
        batch.positions("first")


def test_curve_gathers_a_lambda_sweep(tmp_path):
    from tests.helpers.traces import hydra_record, write_selection

    for i, (lam, size) in enumerate([(0.01, 4), (0.1, 2)]):
        run = tmp_path / str(i)
        run.mkdir()
        (run / "config.yaml").write_text(f"search: {{lambda1: {lam}, lambda2: 0.05}}\n")
        components = [{"name": f"L0H{h}", "kind": "heads", "layer": 0, "index": h} for h in range(size)]
        write_selection(run, components, effect=(size, 1))
        metrics = {f"topk/k{size}/effect_train": size / 2, f"topk/k{size}/effect_heldout": 0.5}
        (run / "metrics.json").write_text(json.dumps(metrics))
    other = tmp_path / "relative"  # another search setting: labelled by it, not only by its λ1
    other.mkdir()
    (other / "config.yaml").write_text("seed: 1\nsearch: {lambda1: 0.02, lambda2: 0.05}\n")
    write_selection(other, [{"name": "L0H0", "kind": "heads", "layer": 0, "index": 0}], effect=(3, 1))
    (other / "metrics.json").write_text("{}")
    hydra_record(other, 1, overrides=("search.loss=relative", "search.lambda1=0.02"), config=False)
    assert curve_main([str(tmp_path)]) == 0
    table = (tmp_path / "curve.md").read_text()
    assert "| pgbct λ1=0.1 | 2 | 2.0000 |" in table and "| topk | 4 | 2.0000 |" in table
    assert "| pgbct (default, search.loss=relative) λ1=0.02 | 1 | 3.0000 |" in table
    assert (tmp_path / "curve.png").stat().st_size > 1000
