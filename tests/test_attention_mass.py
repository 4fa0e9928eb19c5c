"""Where the answer rows attend: per-role attention mass on STG prompts, on a real tiny model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from catlit.data.sources import STGSource
from catlit.eval.attention_mass import REST, attention_mass, main
from catlit.hooks.eager import eager_attention
from catlit.models.embedded import build_embedded

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.fixture
def toy():
    splits = STGSource("toy", seed=3, params={"n_train": 100, "n_ood": 12}).load()
    torch.manual_seed(0)
    model, tokenizer = build_embedded([ex.text for ex in splits.train], ARCH)
    return model.eval(), tokenizer, splits.test["ood"]


def test_stg_examples_name_the_role_of_every_feature(toy):
    *_, examples = toy
    for ex in examples:
        roles = ex.meta["roles"]
        assert sorted(roles.values()) == ["cause", "cause", "spurious", "unrelated"]
        assert all(phrase in ex.input for phrase in roles)
        assert {p for p, r in roles.items() if r == "cause"} == set(ex.important[0].causes)


def test_masses_sum_to_one_and_match_a_direct_reading(toy):
    model, tokenizer, examples = toy
    mass = attention_mass(model, tokenizer, examples, batch_size=5)  # batches of unequal length
    assert set(mass) == {"cause", "spurious", "unrelated", REST}
    assert all(0.0 < v < 1.0 for v in mass.values()) and abs(sum(mass.values()) - 1.0) < 1e-6
    # the spurious mass of one example, read straight from the attention map via character offsets
    ex = examples[0]
    enc = tokenizer(ex.text, return_offsets_mapping=True)
    phrase = next(p for p, r in ex.meta["roles"].items() if r == "spurious")
    start = ex.text.index(phrase)
    cols = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < start + len(phrase) and b > start]
    answer_tokens = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > len(ex.input.rstrip())]
    rows = [i - 1 for i in answer_tokens]  # the rows that predict the answer's tokens
    ids = torch.tensor([enc["input_ids"]])
    attn = eager_attention(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})[0]
    direct = attn[rows][:, cols].sum().item() / len(rows)
    assert abs(attention_mass(model, tokenizer, [ex])["spurious"] - direct) < 1e-6


def test_cli_writes_a_table_and_a_plot_over_run_dirs(tmp_path, toy):
    from omegaconf import OmegaConf

    model, tokenizer, _ = toy
    for seed in (1, 2):  # two saved runs as train.py leaves them: config.yaml + model/
        run = tmp_path / "sweep" / f"run{seed}"
        model.save_pretrained(run / "model")
        tokenizer.save_pretrained(run / "model")
        cfg = {
            "method": {"name": "baseline"},
            "data": {
                "_target_": "catlit.data.sources.stg_datamodule",
                "preset": "toy",
                "seed": seed,
                "params": {"n_train": 50, "n_ood": 8},
            },
        }
        OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "attention_mass.csv").read_text().splitlines()
    assert rows[0] == "method,role,runs,mass,ci95"
    assert {r.split(",")[1] for r in rows[1:]} == {"cause", "spurious", "unrelated", REST}
    assert all(r.split(",")[2] == "2" for r in rows[1:])
    assert (tmp_path / "out" / "attention_mass.png").stat().st_size > 1000
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "one"), "--where", "data.seed=2"]) == 0
    rows = (tmp_path / "one" / "attention_mass.csv").read_text().splitlines()
    assert all(r.split(",")[2] == "1" for r in rows[1:])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "sweep"), "--out", str(tmp_path / "none"), "--where", "data.seed=9"])


def test_lora_runs_and_the_untuned_model_they_started_from_are_measured(tmp_path, toy):
    from omegaconf import OmegaConf

    from catlit.models.lora import apply_lora

    model, tokenizer, _ = toy
    base = tmp_path / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    for seed in (1, 2):  # LoRA runs: model/ holds the adapter only, over model.path
        run = tmp_path / "sweep" / f"run{seed}"
        adapted = apply_lora(AutoModelForCausalLM.from_pretrained(base), r=2, alpha=4, dropout=0.0)
        adapted.save_pretrained(run / "model")
        tokenizer.save_pretrained(run / "model")
        data = {"_target_": "catlit.data.sources.stg_datamodule", "preset": "toy", "seed": seed,
                "params": {"n_train": 50, "n_ood": 8}}  # fmt: skip
        cfg = {"method": {"name": "cat"}, "model": {"path": str(base)}, "data": data}
        OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--untuned"]) == 0
    rows = [r.split(",") for r in (tmp_path / "out" / "attention_mass.csv").read_text().splitlines()[1:]]
    assert {(r[0], r[2]) for r in rows} == {("untuned", "2"), ("cat", "2")}  # one untuned reading a seed
    untuned = {r[1]: float(r[3]) for r in rows if r[0] == "untuned"}
    adapted = {r[1]: float(r[3]) for r in rows if r[0] == "cat"}
    assert untuned == pytest.approx(adapted, abs=1e-4)  # LoRA's B starts at zero: the same model
