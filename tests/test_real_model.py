"""SmolLM2-135M-Instruct, a real pretrained model, on every path catlit has: the fetched copy, its
GGUF file, generation through catlit's scoring, `train.py model=smollm2 data=stg` offline (LoRA CAT),
bf16-mixed on a CPU, ICLM from the pretrained head, `trace.py`, `annotate.py annotator=hf` and
`report.py` over the runs. Needs `catlit-fetch smollm2` (see the `smollm2` fixture)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from catlit.data.encoding import ExampleEncoder
from catlit.data.prompts import as_chat
from catlit.data.sources import STGSource
from catlit.models.fetch import SOURCES, gguf_path, problems
from catlit.models.loading import load_pretrained
from catlit.tracing.datasets import ioi
from catlit.tracing.pairs import encode_pairs
from tests.helpers.runs import FAST, ROOT, compose_cfg

pytestmark = pytest.mark.real_model
HUB_ID = SOURCES["smollm2"].hub_id
FACTS = [  # the untuned model's own greedy answers, in its chat template
    ("What is the capital of France? Answer in one word.", "The capital of France is Paris."),
    ("What is the capital of Japan? Answer in one word.", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy? Answer in one word.", "The capital of Italy is Rome."),
    ("What is the opposite of hot? Answer in one word.", "The opposite of hot is cold."),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(smollm2):
    return load_pretrained(HUB_ID)


def offline_env(tmp_path: Path) -> dict:
    """A machine without the hub: an empty HF cache and HF_HUB_OFFLINE=1."""
    return {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }


def cli(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script, *args, f"paths.log_dir={tmp_path / 'logs'}"]
    done = subprocess.run(
        cmd, cwd=ROOT, env=offline_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run_dir: Path, column: str) -> list[float]:
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with metrics_csv.open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


# ---- the model itself ----------------------------------------------------------------------------
def test_the_fetched_copy_is_smollm2_with_its_tokenizer(smollm2, model_and_tokenizer):
    assert problems(smollm2, hashes=True) == []  # every file as catlit-fetch wrote it
    model, tok = model_and_tokenizer
    c = model.config
    assert (c.model_type, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (
        "llama",
        30,
        9,
        3,
    )
    assert c.hidden_size == 576 and c.vocab_size == 49152 and c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.1
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok("Smoking: 9")["input_ids"][0] != tok.bos_token_id  # plain text gets no BOS
    turn = [{"role": "user", "content": "x"}]
    chat = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


def test_the_gguf_file_loads_as_the_converted_copy(tmp_path, smollm2, model_and_tokenizer):
    gguf = gguf_path("smollm2")
    model, tok = load_pretrained(str(gguf.parent), gguf_file=gguf.name, family="llama")
    converted, converted_tok = model_and_tokenizer
    assert type(model).__name__ == "LlamaForCausalLM" and not getattr(model, "hf_quantizer", None)
    theirs = converted.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    text = "Weight: 5, Smoking: 9\nAnswer: High Risk"
    assert tok(text)["input_ids"] == converted_tok(text)["input_ids"]
    # and it saves as a plain checkpoint (transformers refuses to save the GGUF-loaded model it builds)
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def test_every_stg_row_gets_its_causal_mask_on_smollm2s_tokenizer(model_and_tokenizer):
    _, tok = model_and_tokenizer
    for preset in ("toy", "released"):
        for chat in (False, True):
            encoder = ExampleEncoder(tok, max_length=256)
            rows = STGSource(preset, seed=0).load().train
            encoded = [encoder.encode(as_chat(ex, tok) if chat else ex) for ex in rows]
            assert all(e.blocks for e in encoded), (preset, chat, encoder.coverage.summary())
            c = encoder.coverage.counts
            assert c["causes_matched"] == c["causes"] and c["effects_matched"] == c["effects"]


def test_the_efficient_capture_matches_eager_attention_on_smollm2s_grouped_heads(model_and_tokenizer):
    """30 layers of 9 query heads over 3 key-value heads, real attention patterns on the STG batch:
    the efficient capture's loss and LoRA gradients equal the eager full maps'."""
    import copy

    from benchmarks.real_model_cpu import stg_batch

    from catlit.models.lora import apply_lora
    from tests.test_capture import assert_same, loss_and_grads

    base, tok = model_and_tokenizer
    batch = stg_batch(tok, size=4)
    torch.manual_seed(0)
    fast = apply_lora(copy.deepcopy(base), r=4, alpha=8, dropout=0.0)
    for name, p in fast.named_parameters():  # non-zero B, so every adapter gets a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    eager = copy.deepcopy(fast)
    eager.set_attn_implementation("eager")
    fast.set_attn_implementation("sdpa")
    from catlit.hooks.attention import EagerAttentionCapture, RowAttentionCapture

    assert_same(
        loss_and_grads(eager, EagerAttentionCapture(), batch),
        loss_and_grads(fast, RowAttentionCapture(), batch),
        atol=2e-5,
    )


def test_generation_through_catlit_scoring_answers_factual_prompts(tmp_path, smollm2):
    """A test-only run (train=false) of the untuned model: in its chat template it answers every
    question, stopping at <|im_end|>; raw, as the CAT authors prompt, it answers none."""
    from catlit.training.run import run

    rows = tmp_path / "facts.jsonl"
    rows.write_text("".join(json.dumps({"input": q, "target": a}) + "\n" for q, a in FACTS))
    accuracy = {}
    for fmt in ("chat", "raw"):
        data = [f"data.train={rows}", f"data.test.iid={rows}", f"data.test.ood={rows}", "data.task=exact"]
        cfg = compose_cfg(
            tmp_path / fmt,
            [*FAST, "model=smollm2", "data=jsonl", *data, f"data.prompt_format={fmt}", "train=false",
             "data.max_new_tokens=16", "optimized_metric=null"],
        )  # fmt: skip
        _, metrics = run(cfg)
        accuracy[fmt] = metrics["test/iid/acc"]
        predictions = [
            json.loads(line) for line in (tmp_path / fmt / "run" / "predictions" / "iid.jsonl").open()
        ]
        if fmt == "chat":
            assert [p["prediction"].strip() for p in predictions] == [a for _, a in FACTS]
    assert accuracy == {"chat": 1.0, "raw": 0.0}


# ---- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm2) -> Path:
    return tmp_path_factory.mktemp("real_runs")


def train_run(runs: Path, task: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python train.py ...` offline, logging to csv every step; (the process, its run dir)."""
    quiet = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    done = cli("train.py", runs, *args, *quiet, f"task_name={task}")
    (metrics_file,) = (runs / "logs").glob(f"runs/{task}/*/metrics.json")
    return done, metrics_file.parent


@pytest.fixture(scope="module")
def stg_run(runs) -> tuple[subprocess.CompletedProcess, Path]:
    """`python train.py model=smollm2 data=stg` as a user types it, offline, a few LoRA CAT steps."""
    return train_run(
        runs, "train", "model=smollm2", "data=stg", "data.limit=24", "data.batch_size=8",
        "data.eval_batch_size=24", "trainer.max_epochs=3", "data.max_new_tokens=4", "optimizer.lr=2e-3",
    )  # fmt: skip


def test_train_py_model_smollm2_data_stg_trains_lora_cat_offline(stg_run):
    done, run_dir = stg_run
    assert "using the copy `catlit-fetch` converted" in done.stdout
    log = (run_dir / "cli.log").read_text()
    assert "examples with a mask 24/24" in log and "LoRA: " in log
    ce = losses(run_dir, "train/ce")
    assert len(ce) == 9 and all(math.isfinite(v) for v in ce)
    assert sum(ce[-3:]) < sum(ce[:3]), ce  # the last epoch's CE below the first's
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/attn_active_steps"] > 0 and "test/ood/acc" in metrics
    adapter = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == HUB_ID  # the hub id, not this machine's cache path
    assert not (run_dir / "model" / "model.safetensors").exists()  # adapter-only


@pytest.fixture(scope="module")
def bf16_run(runs):
    """The paper's objective under bf16-mixed on the CPU, through the same recipe."""
    from catlit.training.run import run

    cfg = compose_cfg(
        runs / "bf16",
        [*FAST, "model=smollm2", "data=stg", "method=cat", "trainer.precision=bf16-mixed", "data.limit=16",
         "data.batch_size=8", "data.max_new_tokens=4"],
    )  # fmt: skip
    return run(cfg)[1], runs / "bf16" / "run"


def test_bf16_mixed_trains_on_the_cpu(bf16_run):
    metrics, run_dir = bf16_run
    assert OmegaConf.load(run_dir / "config.yaml").trainer.precision == "bf16-mixed"
    assert all(math.isfinite(v) for v in losses(run_dir, "train/loss"))
    assert metrics["train/attn_active_steps"] > 0


# ---- ICLM from the pretrained head ---------------------------------------------------------------
def test_iclm_starts_from_the_pretrained_model(model_and_tokenizer):
    """head=auto keeps the base's own head: untrained, ICLM predicts what SmolLM2 predicts (logits and
    greedy text), where the release's new Linear(2D -> V) head (head=full) writes noise."""
    import copy

    from catlit.methods.iclm import IndependentCausalLM
    from catlit.methods.iclm.positions import routed_tokens

    base, tok = model_and_tokenizer
    ids = tok(["The capital of France is"], return_tensors="pt")
    prompt, mask = ids["input_ids"], ids["attention_mask"]
    with torch.no_grad():
        want_logits = base(**ids).logits[0, -1]
        want_text = base.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    seen = {}
    for head in ("auto", "full"):
        method = IndependentCausalLM(head=head)
        model = method.build(copy.deepcopy(base), tok)
        method.eval()
        with torch.no_grad():
            route = method.route(model, prompt, mask, routed_tokens(mask, True))
            last = torch.zeros_like(mask, dtype=torch.bool)
            last[:, -1] = True
            logits = method._predict(model, prompt, mask, last, route, "test/iid")[0][0]
            text = method.generate(model, {"prompt_ids": prompt, "prompt_mask": mask}, "test/iid", 6,
                                   tok.pad_token_id, tok.eos_token_id)  # fmt: skip
        seen[head] = (method.head_type, logits, text)
    assert seen["auto"][0] == "base" and seen["full"][0] == "full"
    assert torch.allclose(seen["auto"][1], want_logits, atol=1e-3)
    assert torch.equal(seen["auto"][2], want_text)
    assert not torch.equal(seen["full"][2], want_text)


@pytest.fixture(scope="module")
def iclm_run(runs):
    return train_run(
        runs, "iclm_real", "model=smollm2", "method=iclm", "data=acre", "data.preset=small", "data.limit=8",
        "data.batch_size=4", "trainer.max_epochs=1", "trainer.precision=bf16-mixed",
    )  # fmt: skip


def test_iclm_trains_a_few_steps_on_smollm2(iclm_run):
    _, run_dir = iclm_run
    assert json.loads((run_dir / "model" / "iclm.json").read_text())["head"] == "base"
    assert all(math.isfinite(v) for v in losses(run_dir, "train/loss"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/iid/acc", "test/iid/routing_purity"} <= set(metrics)


def test_report_py_over_the_real_model_runs(runs, stg_run, bf16_run, iclm_run):
    out = runs / "report"
    subprocess.run(
        [sys.executable, "report.py", str(runs / "logs"), str(runs / "bf16"), "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    table = (out / "report.md").read_text()
    for method in ("cat_share", "cat", "iclm"):
        assert f"| {method}" in table or f"{method} " in table, table


# ---- tracing and annotation ----------------------------------------------------------------------
def test_trace_py_model_smollm2_on_winobias(tmp_path, smollm2, pgbct_data):
    cli(
        "trace.py", tmp_path, "model=smollm2", "pairs=winobias", "pairs.limit=16", "search.epochs=2",
        "search.batch_size=16", "select.k=5", "baselines.methods=[atp,random]", "baselines.sizes=[5]",
        "measures.points=0", f"paths.pgbct_data_dir={pgbct_data}",
    )  # fmt: skip
    (metrics_file,) = (tmp_path / "logs").glob("runs/trace/*/metrics.json")
    selection = json.loads((metrics_file.parent / "selection.json").read_text())
    assert selection["size"] == 5 and len(selection["components"]) == 5
    assert all(
        c["kind"] == "heads" and 0 <= c["layer"] < 30 and 0 <= c["index"] < 9 for c in selection["components"]
    )
    z = selection["z"]["heads"]
    assert len(z) == 30 and all(len(row) == 9 for row in z)  # a z for every head of the 30 x 9
    metrics = json.loads(metrics_file.read_text())
    assert math.isfinite(metrics["pgbct/effect_heldout"]) and metrics["pairs/train"] > 0
    mib = json.loads((metrics_file.parent / "mib" / "pgbct.json").read_text())
    assert mib["cfg"] == {"n_layers": 30, "n_heads": 9, "parallel_attn_mlp": False, "d_model": 576}
    assert sorted(v["score"] for k, v in mib["nodes"].items() if k.startswith("a")) == list(range(1, 271))


def test_the_default_search_selects_heads_where_smollm2s_bias_is_small(tmp_path, smollm2, pgbct_data):
    """WinoBias's bias on SmolLM2 is small (the full patch moves the odds by ~10%): with the paper's
    inverse loss λ1 = 0.05 pushes every head below z = 0.5; the default pooled loss keeps some."""
    from catlit.tracing.run import setup
    from catlit.tracing.search import loss_scale, pgbct
    from catlit.tracing.settings import SearchSettings

    cfg = compose_cfg(
        tmp_path, ["model=smollm2", "pairs=winobias", "pairs.limit=24", f"paths.pgbct_data_dir={pgbct_data}"],
        config_name="trace",
    )  # fmt: skip
    torch.set_num_threads(1)
    tracer, train_idx, _, _ = setup(cfg)
    settings = SearchSettings.from_config(cfg.search).replace(epochs=3)
    assert settings.loss == "pooled" and settings.lambda1 == 0.05
    assert loss_scale(tracer, train_idx, "pooled") < 0.5  # a small effect: the unit is the full patch's
    assert pgbct(tracer, train_idx, settings.replace(loss="inverse")).threshold() == []
    assert len(pgbct(tracer, train_idx, settings).threshold()) >= 1


def test_smollm2_solves_ioi_and_the_counterfactuals_undo_it(model_and_tokenizer):
    """The IOI prompts favour the indirect object; ABC's fresh names leave no preference; the S2/IO
    flip reverses it (logit difference " IO" - " S" at the last position, every name one token)."""
    model, tokenizer = model_and_tokenizer

    def logit_diffs(texts, candidates) -> torch.Tensor:
        out = []
        for text, (io, subject) in zip(texts, candidates):
            ids = tokenizer(text, return_tensors="pt").input_ids
            with torch.no_grad():
                last = model(ids).logits[0, -1]
            (a,), (b,) = tokenizer(io).input_ids, tokenizer(subject).input_ids
            out.append((last[a] - last[b]).item())
        return torch.tensor(out)

    for counterfactual in ("abc", "s2_io_flip"):
        pairs = ioi(48, seed=0, counterfactual=counterfactual)
        assert encode_pairs(tokenizer, pairs, "raise")[1] == 0  # every pair aligns token for token
        cands = [p.candidates for p in pairs]
        clean = logit_diffs([p.source for p in pairs], cands)
        base = logit_diffs([p.base for p in pairs], cands)
        assert (clean > 0).float().mean() >= 0.85 and clean.mean() > 3.0
        if counterfactual == "abc":
            assert base.mean().abs() < 1.0
        else:
            assert base.mean() < -3.0


def test_annotate_py_with_smollm2_as_the_local_annotator(tmp_path, smollm2, released_data):
    rows = [json.loads(line) for line in (released_data / "SVAMP" / "svamp_train.jsonl").open()][:3]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"input": r["input"], "target": r["target"]}) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    done = cli(
        "annotate.py", tmp_path, f"input={source}", f"output={out}", "annotator=hf",
        f"annotator.path={HUB_ID}", "annotator.max_new_tokens=64", "demos=math",
    )  # fmt: skip
    written = [json.loads(line) for line in out.open()]
    assert [r["input"] for r in written] == [r["input"] for r in rows]  # every row, in order
    assert all(isinstance(r["important"], list) for r in written)  # parsed, or empty and counted
    assert "rows" in done.stdout + done.stderr  # the run's summary counts them
