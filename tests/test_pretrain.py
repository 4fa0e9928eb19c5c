"""catlit's pretrained base: the corpus, `pretrain.py`, and `model=base` in train.py and trace.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from transformers import AutoModelForCausalLM

from catlit.cli import config_dir
from catlit.pretraining.corpus import FAMILIES, documents, draw_game
from catlit.pretraining.run import base_folder, build

ROOT = Path(__file__).resolve().parents[1]
MIX = {"stg": 0.4, "numeric": 0.2, "acre": 0.2, "arithmetic": 0.2}
# a base that builds in seconds: the tests' configuration of conf/pretrain.yaml
SMALL = [
    "base.corpus.documents=400",
    "base.corpus.heldout=40",
    "base.vocab_size=512",
    "base.arch.hidden_size=32",
    "base.arch.intermediate_size=64",
    "base.arch.num_hidden_layers=2",
    "base.arch.num_attention_heads=2",
    "base.arch.num_key_value_heads=1",
    "base.block_size=64",
    "base.batch_size=8",
    "base.steps=40",
    "base.warmup=4",
    "eval_every=20",
    "progress_bar=false",
]


def compose_pretrain(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("pretrain", overrides=[*SMALL, f"out_dir={tmp_path}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def small_base(out_dir: Path) -> str:
    """The `model.pretrain` override that selects the tests' small base, built under `out_dir`."""
    return "model.pretrain=[" + ",".join(f"'{o}'" for o in [*SMALL, f"out_dir={out_dir}"]) + "]"


def test_the_corpus_is_seeded_and_draws_every_family():
    first = documents(200, 3, MIX)
    assert first == documents(200, 3, MIX)
    assert first != documents(200, 4, MIX)
    assert documents(50, 3, MIX, split="heldout") != first[:50]  # its own stream
    text = "\n".join(first)
    for marker in ("Answer: ", "Score = ", "Blicket machine.", "ACRE T1", "How many"):
        assert marker in text, marker
    assert set(FAMILIES) == set(MIX)


def test_a_family_left_out_of_the_mix_never_appears():
    text = "\n".join(documents(100, 0, {"arithmetic": 1.0}))
    assert "How many" in text and "Blicket" not in text and "Score =" not in text


def test_the_stg_games_teach_no_shortcut():
    """Every drawn game's spurious variables ignore the label: the upper half of the range is as
    likely under either label (a game of the spurious task would give 100% vs 0%)."""
    rng = random.Random(0)
    agree = total = 0
    for _ in range(300):
        game = draw_game(rng)
        assert game.spurious_strength == 0.0
        for _ in range(5):
            example = game.sample(rng, ood=False)
            mid = (game.low + game.high) // 2
            for phrase, role in example.meta["roles"].items():
                if role == "spurious":
                    upper = int(phrase.rsplit(": ", 1)[1]) > mid
                    agree += upper == (example.target == game.labels[0])
                    total += 1
    assert total > 300 and abs(agree / total - 0.5) < 0.06


def test_bad_corpus_settings_are_refused():
    with pytest.raises(ValueError, match="unknown families"):
        documents(5, 0, {"stg": 1.0, "poetry": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        documents(5, 0, {"stg": -1.0})


def test_a_base_is_deterministic_and_learns(tmp_path):
    cfg = compose_pretrain(tmp_path / "a")
    metrics = build(cfg, base_folder(cfg))
    again = compose_pretrain(tmp_path / "b")
    build(again, base_folder(again))
    assert base_folder(cfg).name == base_folder(again).name  # the hash ignores out_dir
    one = AutoModelForCausalLM.from_pretrained(base_folder(cfg) / "model").state_dict()
    two = AutoModelForCausalLM.from_pretrained(base_folder(again) / "model").state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    # 40 small steps already beat a uniform guess by a wide margin
    assert metrics["heldout_loss"] < metrics["uniform_loss"] - 1.0
    assert json.loads((base_folder(cfg) / "metrics.json").read_text())["parameters"] == metrics["parameters"]
    assert base_folder(compose_pretrain(tmp_path, "base.seed=1")).name != base_folder(cfg).name


def test_pretrain_builds_once_then_reuses(tmp_path):
    args = [sys.executable, "pretrain.py", *SMALL, f"out_dir={tmp_path}", f"hydra.run.dir={tmp_path}/hydra"]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "pretraining catlit's base" in first.stdout and "held-out loss" in first.stdout
    (folder,) = tmp_path.glob("base-*")
    assert (folder / "model" / "config.json").is_file() and (folder / "model" / "tokenizer.json").is_file()
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "already built" in second.stdout
    assert [p.name for p in tmp_path.glob("base-*")] == [folder.name]
    bad = subprocess.run([*args, "base.steps=0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "base.steps" in bad.stderr


@pytest.mark.slow
def test_model_base_trains_and_traces_from_the_cached_base(tmp_path):
    """`train.py model=base` builds the base on first use and fine-tunes it; `trace.py model=base`
    traces a baseline fine-tuned from that base (built once, then reused)."""
    pretrain = small_base(tmp_path / "bases")
    train = [sys.executable, "train.py", "model=base", pretrain, "experiment=quick", "logger=none"]
    train += [
        f"paths.log_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/run",
        "trainer.enable_progress_bar=false",
    ]
    done = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "building it once" in done.stdout
    (base,) = (tmp_path / "bases").glob("base-*")
    recorded = (tmp_path / "run" / "config.yaml").read_text()
    assert str(base / "model") in recorded  # the run records which base it fine-tuned
    trace = [sys.executable, "trace.py", "model=base", pretrain, f"paths.log_dir={tmp_path}"]
    trace += ["default_model.overrides=['experiment=quick','method=baseline','logger=none']"]
    trace += ["search.epochs=2", "pairs.loader.n=12", "select.k=2", "baselines.sizes=[1,2]"]
    trace += ["baselines.methods=[topk]", "measures.points=0"]
    traced = subprocess.run(trace, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert traced.returncode == 0, traced.stderr[-3000:]
    assert "reusing the pretrained base" in traced.stdout and "| pgbct |" in traced.stdout
    (tuned,) = (tmp_path / "trace_models").glob(f"*{base.name}")
    adapter_or_config = json.loads((tuned / "model" / "config.json").read_text())
    assert adapter_or_config["hidden_size"] == 32  # fine-tuned from the small base, not the tiny default


@pytest.mark.slow
def test_iclm_acre_base_fine_tunes_every_module_from_the_base(tmp_path):
    """`experiment=iclm_acre_base` (docs/iclm.md) runs ICLM's router, invariant and domain modules
    on the pretrained base, with prompts the base's tokenizer makes longer than 256 tokens."""
    pretrain = small_base(tmp_path / "bases")
    run = [sys.executable, "train.py", "experiment=iclm_acre_base", pretrain, "logger=none"]
    run += ["data.params.n_train=32", "data.params.n_val=8", "data.params.n_test=8", "trainer.max_epochs=1"]
    run += [f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{s}/acc" for s in ("iid", "compositional", "systematic")} <= set(metrics)
    assert any("/by_query_type/" in k for k in metrics) and "test/iid/routing_purity" in metrics
    (base,) = (tmp_path / "bases").glob("base-*")
    assert str(base / "model") in (tmp_path / "run" / "config.yaml").read_text()
    adapters = {p.name for p in (tmp_path / "run" / "model").iterdir() if p.is_dir()}
    assert {"router", "invariant", "domain_0", "domain_1"} <= adapters


def test_a_damaged_cached_base_is_named_kept_aside_and_built_again(tmp_path, capsys):
    from catlit.pretraining.run import run

    cfg = compose_pretrain(tmp_path)
    run(cfg)
    folder = base_folder(cfg)
    weights = folder / "model" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a disk that filled, a copy cut short
    capsys.readouterr()
    run(cfg)
    out = capsys.readouterr().out
    assert f"the cached base is damaged ({weights} is truncated" in out or f"({weights} has" in out
    assert "building it again" in out and "already built" not in out
    assert weights.read_bytes() == whole  # rebuilt (deterministic), and the damaged one kept aside
    (aside,) = tmp_path.glob(f".{folder.name}.damaged-*")
    assert (aside / "model" / "model.safetensors").stat().st_size == len(whole) // 2


def test_a_truncated_weights_file_is_named_when_a_model_loads(tmp_path):
    from catlit.models.loading import load_pretrained
    from catlit.pretraining.run import run

    cfg = compose_pretrain(tmp_path)
    run(cfg)
    model = base_folder(cfg) / "model"
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{weights} has .* bytes where its header says"):
        load_pretrained(model)


def test_two_pretrain_runs_of_one_config_build_it_once(tmp_path):
    args = [sys.executable, "pretrain.py", *SMALL, f"out_dir={tmp_path}"]
    runs = [
        subprocess.Popen(
            [*args, f"hydra.run.dir={tmp_path}/h{i}"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [r.communicate(timeout=600)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0]
    assert sum("pretraining catlit's base" in out for out in outs) == 1, outs
    assert sum("already built" in out for out in outs) == 1, outs
    assert len(list(tmp_path.glob("base-*"))) == 1
