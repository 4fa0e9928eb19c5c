"""End-to-end tracing on the composed conf/trace.yaml, and CAT guided by a trace's selection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from catlit.errors import ConfigError
from catlit.hooks.selection import read_head_selection
from catlit.methods.cat import CausalAttentionTuning
from catlit.tracing.run import run as trace_run
from tests.helpers.runs import ROOT, compose_cfg, train
from tests.helpers.traces import write_selection

TRACE_FAST = [
    "select.k=2",
    "pairs.loader.n=30",
    "search.epochs=4",
    "search.batch_size=16",
    "baselines.sizes=[1,3]",
    "baselines.random_draws=2",
]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """A catlit baseline run on the toy STG preset (small and short): its model/ folder."""
    tmp = tmp_path_factory.mktemp("baseline")
    _, _, _, run_dir = train(tmp, "method=baseline", "trainer.max_epochs=10", "data.params.n_train=400")
    return run_dir / "model"


@pytest.fixture(scope="module")
def trace_dir(trained_model, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trace")
    cfg = compose_cfg(tmp, [f"model.path={trained_model}", *TRACE_FAST], config_name="trace")
    trace_run(cfg)
    return Path(cfg.paths.output_dir)


def test_trace_writes_selection_metrics_and_plots(trace_dir):
    for name in ("config.yaml", "selection.json", "metrics.json"):
        assert (trace_dir / name).is_file(), name
    for plot in ("effect_vs_size.png", "z_heads.png", "z_history.png"):
        assert (trace_dir / "plots" / plot).stat().st_size > 1000, plot
    selection = json.loads((trace_dir / "selection.json").read_text())
    metrics = json.loads((trace_dir / "metrics.json").read_text())
    size = selection["size"]
    assert size == len(selection["components"]) == metrics["pgbct/size"]
    assert size == 2 and selection["rule"] == "top 2 of z"
    z = sorted((v for row in selection["z"]["heads"] for v in row), reverse=True)
    assert [c["z"] for c in selection["components"]] == pytest.approx(z[:2], abs=1e-4)
    assert all(
        c["kind"] == "heads" and c["hook"] == f"blocks.{c['layer']}.attn.hook_z"
        for c in selection["components"]
    )
    assert len(selection["z"]["heads"]) == 2 and len(selection["z"]["heads"][0]) == 4  # 2 layers x 4 heads
    assert metrics["pairs/train"] == 24 and metrics["pairs/heldout"] == 6
    # greedy's first pick is the best single component: the same set as top-1
    assert metrics["greedy/k1/effect_train"] == pytest.approx(metrics["topk/k1/effect_train"])
    for method in ("pgbct", "topk", "greedy", "greedy_backward", "atp", "atp_ig", "hardconcrete", "random"):
        assert f"{method}/k3/effect_heldout" in metrics
        # faithfulness curves on the held-out pairs at log-spaced sizes 1..8, and their areas
        assert metrics[f"{method}/curve/k8/sufficiency"] == pytest.approx(1.0)  # every head: the full patch
        assert metrics[f"{method}/curve/k8/necessity"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[f"{method}/cmd"] >= 0.0 and metrics[f"{method}/forwards"] >= 0
    assert metrics["atp/forwards"] == 2 and metrics["atp/backwards"] == 1
    assert metrics["measures/full_effect"] == pytest.approx(metrics["all/k8/effect_heldout"])
    assert (trace_dir / "plots" / "faithfulness.png").stat().st_size > 1000


def test_trace_writes_each_sets_effect_on_every_held_out_pair(trace_dir):
    """heldout.json: per pair, what metrics.json's held-out effects are the means of (random: of its
    draws), on the held-out pairs in a fixed order."""
    held = json.loads((trace_dir / "heldout.json").read_text())
    metrics = json.loads((trace_dir / "metrics.json").read_text())
    assert len(held["pairs"]) == metrics["pairs/heldout"] == 6
    keys = {k.removesuffix("/effect_heldout") for k in metrics if k.endswith("/effect_heldout") and "/k" in k}
    assert set(held["effects"]) == keys and "random/k3" in keys and "all/k8" in keys
    for key, values in held["effects"].items():
        assert len(values) == 6
        assert sum(values) / 6 == pytest.approx(metrics[f"{key}/effect_heldout"], rel=1e-5, abs=1e-7), key
    assert len({tuple(v) for v in held["effects"].values()}) > 2  # sets differ pair by pair


def test_trace_writes_every_methods_circuit_in_mibs_graph_format(trace_dir):
    selection = json.loads((trace_dir / "selection.json").read_text())
    metrics = json.loads((trace_dir / "metrics.json").read_text())
    for method in ("pgbct", "topk", "greedy", "greedy_backward", "atp", "atp_ig", "hardconcrete", "random"):
        data = json.loads((trace_dir / "mib" / f"{method}.json").read_text())
        assert data["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64}
        heads = {k: v for k, v in data["nodes"].items() if k.startswith("a")}
        assert sorted(v["score"] for v in heads.values()) == [1.0, 2, 3, 4, 5, 6, 7, 8]  # a full ranking
        picked = sum(v["in_graph"] for v in heads.values())
        if method in ("greedy_backward", "hardconcrete"):  # each chooses a set of its own
            assert picked == metrics[f"{method}/size"] >= 1
        else:  # a ranking only: its first components at PGB-CT's size
            assert picked == selection["size"]
        assert data["catlit"]["method"] == method and data["catlit"]["head_mode"] == "head_output"
    pgbct = json.loads((trace_dir / "mib" / "pgbct.json").read_text())
    chosen = {f"a{c['layer']}.h{c['index']}" for c in selection["components"]}
    assert {k for k, v in pgbct["nodes"].items() if v["in_graph"] and k.startswith("a")} == chosen
    best = max((k for k in pgbct["nodes"] if k.startswith("a")), key=lambda k: pgbct["nodes"][k]["score"])
    assert best in chosen
    assert not (trace_dir / "mib" / "all.json").exists()


def test_tracing_guided_cat_restricts_the_loss_to_the_traced_heads(trace_dir, tmp_path):
    selection = json.loads((trace_dir / "selection.json").read_text())
    expected: dict[int, list[int]] = {}
    for comp in selection["components"]:
        expected.setdefault(comp["layer"], []).append(comp["index"])
    heads = read_head_selection(trace_dir)
    assert heads == {k: sorted(v) for k, v in expected.items()}
    method = CausalAttentionTuning(heads_from=str(trace_dir / "selection.json"))
    assert method.capture.selection.layers(2) == sorted(heads)
    for layer in sorted(heads):
        assert method.capture.selection.heads(layer, 4) == heads[layer]
    with pytest.raises(ValueError, match="heads_from sets the layers"):
        CausalAttentionTuning(heads_from=str(trace_dir), layers="last:1")
    _, _, metrics, _ = train(tmp_path, "method=cat", f"method.heads_from={trace_dir}")
    assert "test/ood/acc" in metrics


def test_trace_needs_a_finished_selection_with_heads(tmp_path):
    write_selection(tmp_path, [{"name": "L0H1", "kind": "heads", "layer": 0, "index": 1}])
    with pytest.raises(ValueError, match="that trace did not finish"):  # no metrics.json: cut short
        read_head_selection(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    assert read_head_selection(tmp_path) == {0: [1]}
    write_selection(tmp_path, [{"name": "L0M0", "kind": "mlp", "layer": 0, "index": 0}])
    with pytest.raises(ValueError, match="no attention heads"):
        read_head_selection(tmp_path)

    with pytest.raises(FileNotFoundError, match="run trace.py first"):
        read_head_selection(tmp_path / "missing")


@pytest.mark.parametrize(
    ("overrides", "components"),
    [
        (["components=[mlp,attn_blocks]", "positions=last"], 2 * 64 + 2),  # d_model 64, 2 layers
        (["mode=attention_pattern", "positions=changed", "pairs.source=zero"], 2 * 4),  # 4 heads
        (["components=[neurons]", "pairs.source=mean", "positions=context"], 2 * 256),  # MLP width
    ],
)
def test_trace_component_kinds_sources_and_positions(trained_model, tmp_path, overrides, components):
    fast = [*TRACE_FAST, "baselines.methods=[topk,all]", "search.epochs=2"]
    cfg = compose_cfg(tmp_path, [f"model.path={trained_model}", *fast, *overrides], config_name="trace")
    metrics = trace_run(cfg)
    assert f"all/k{components}/effect_train" in metrics  # every component of the kinds, no other
    assert metrics["pgbct/size"] == 2 and "topk/k1/effect_train" in metrics
    mib = json.loads((Path(cfg.paths.output_dir) / "mib" / "topk.json").read_text())
    level = "neuron" if "mlp" in cfg.components else "node"
    assert mib["catlit"]["level"] == level and ("neurons" in mib["nodes"]["m0"]) == (level == "neuron")


def test_trace_reads_user_jsonl_pairs_with_noise(trained_model, tmp_path):
    rows = [
        {"base": f"Smoking: {v}, Weight: 2 Answer: ", "noise": f"Smoking: {v}", "candidates": ["High Risk"]}
        for v in range(1, 9)
    ]
    file = tmp_path / "pairs.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows))
    overrides = [
        f"model.path={trained_model}",
        "pairs=jsonl",
        f"pairs.loader.path={file}",
        "pairs.effect=prob_drop",
        "pairs.source=noise",
        "search.epochs=2",
        "baselines.methods=[all]",
        "baselines.sizes=[1]",
    ]
    metrics = trace_run(compose_cfg(tmp_path, overrides, config_name="trace"))
    assert metrics["pairs/train"] + metrics["pairs/heldout"] == 8
    # noise on the causes lowers the answer's probability when every head is patched
    assert metrics["all/k8/effect_train"] > 0


@pytest.mark.slow
def test_trace_cli_trains_the_default_model_once_then_reuses_it(tmp_path):
    args = [
        sys.executable,
        "trace.py",
        f"paths.log_dir={tmp_path}",
        "default_model.overrides=['experiment=quick','method=baseline','logger=none']",
        *TRACE_FAST,
    ]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training catlit's embedded baseline" in first.stdout
    assert "| pgbct |" in first.stdout and "| greedy |" in first.stdout and "selected (" in first.stdout
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing the embedded baseline" in second.stdout
    assert len(list(tmp_path.glob("runs/trace/*/selection.json"))) == 2


def test_trace_config_composes_for_every_pairs_option(tmp_path):
    for option in ("stg", "winobias", "winogender", "professions", "counterfact", "jsonl"):
        cfg = compose_cfg(tmp_path, [f"pairs={option}"], config_name="trace")
        with open_dict(cfg):
            assert cfg.pairs.loader._target_.startswith("catlit.tracing.datasets.")
        assert cfg.pairs.effect in ("odds", "prob_drop", "logit_diff")


# the PGB-CT release's setting per dataset (its train_*.py scripts)
RELEASED = {
    "winobias": {"mode": "attention_pattern", "components": ["heads"], "positions": "all", "epochs": 15},
    "winogender": {"mode": "attention_pattern", "components": ["heads"], "positions": "all", "epochs": 15},
    "professions": {"mode": "head_output", "components": ["mlp"], "positions": "all", "epochs": 30},
    "counterfact": {"mode": "head_output", "components": ["mlp"], "positions": "context", "epochs": 15},
}


@pytest.mark.parametrize("option", sorted(RELEASED))
def test_pairs_presets_set_the_released_intervention_and_search_paper_its_optimisation(tmp_path, option):
    cfg = compose_cfg(tmp_path, [f"pairs={option}", "search=paper"], config_name="trace")
    got = {"mode": cfg.mode, "components": list(cfg.components), "positions": cfg.positions}
    assert {**got, "epochs": cfg.search.epochs} == RELEASED[option]
    assert (cfg.search.lambda1, cfg.search.lambda2, cfg.search.schedule) == (1e-4, 1e-4, "linear")
    assert cfg.search.loss == "inverse" and cfg.search.lr.heads == 0.1 and cfg.search.lr.mlp == 0.5
    if option == "counterfact":
        assert cfg.pairs.loader.noise == "prompt"
    ranking = compose_cfg(tmp_path, [f"pairs={option}", "search=ranking"], "trace").search
    assert (ranking.loss, ranking.schedule, ranking.lambda1) == ("relative", "constant", 5e-4)
    overridden = compose_cfg(tmp_path, [f"pairs={option}", "mode=head_output", "search.epochs=3"], "trace")
    assert overridden.mode == "head_output" and overridden.search.epochs == 3  # the command line wins


def test_trace_scores_rankings_against_a_known_circuit(trained_model, tmp_path):
    fast = [
        *TRACE_FAST,
        "baselines.methods=[topk,atp,random]",
        "search.epochs=2",
        "measures.grid=log",
        "measures.points=3",
    ]
    cfg = compose_cfg(tmp_path, [f"model.path={trained_model}", *fast, "truth=[L0H1,L1H2]"], "trace")
    metrics = trace_run(cfg)
    for method in ("pgbct", "topk", "atp", "random"):
        assert 0.0 <= metrics[f"{method}/auroc"] <= 1.0
    assert sorted(k for k in metrics if k.startswith("topk/curve/")) == [
        f"topk/curve/k{k}/{m}" for k in (1, 3, 8) for m in ("necessity", "sufficiency")
    ]
    bad = compose_cfg(tmp_path / "bad", [f"model.path={trained_model}", *fast, "truth=[L9H9]"], "trace")
    with pytest.raises(ValueError, match=r"truth: unknown component\(s\) \['L9H9'\]; names look like L0H0"):
        trace_run(bad)


def test_trace_measures_with_mibs_intervention(trained_model, tmp_path):
    fast = [*TRACE_FAST, "baselines.methods=[topk,atp,all]", "search.epochs=2", "pairs.effect=logit_diff"]
    cfg = compose_cfg(
        tmp_path, [f"model.path={trained_model}", *fast, "measures.intervention=mib"], config_name="trace"
    )
    metrics = trace_run(cfg)
    for method in ("pgbct", "topk", "atp"):
        assert metrics[f"{method}/curve/k8/sufficiency"] == pytest.approx(1.0)  # every head: the clean run
        assert metrics[f"{method}/curve/k0/sufficiency"] == pytest.approx(0.0, abs=1e-6)  # none: corrupted
        assert metrics[f"{method}/cmd"] >= 0.0 and 0.0 < metrics[f"{method}/cpr"] <= 1.5
    bad = compose_cfg(
        tmp_path / "odds", [f"model.path={trained_model}", "measures.intervention=mib"], config_name="trace"
    )
    with pytest.raises(ConfigError, match="needs pairs.effect=logit_diff"):
        trace_run(bad)


def test_every_method_searches_and_is_scored_in_mibs_terms_with_intervention_mib(trained_model, tmp_path):
    fast = [*TRACE_FAST, "baselines.methods=[topk,atp,all]", "search.epochs=2", "pairs.effect=logit_diff"]
    both = [f"model.path={trained_model}", *fast, "intervention=mib", "measures.intervention=mib"]
    metrics = trace_run(compose_cfg(tmp_path, both, config_name="trace"))
    full = metrics["all/k8/effect_heldout"]
    for method in ("topk", "atp"):  # the k-set's share is its MIB faithfulness (the curve's k = 1)
        share = metrics[f"{method}/k1/effect_heldout"] / full
        assert share == pytest.approx(metrics[f"{method}/curve/k1/sufficiency"], rel=1e-4, abs=1e-5)
    plain = trace_run(compose_cfg(tmp_path / "catlit", [f"model.path={trained_model}", *fast], "trace"))
    assert metrics["topk/k1/effect_heldout"] != pytest.approx(plain["topk/k1/effect_heldout"])
    bad = [f"model.path={trained_model}", "intervention=mib", "pairs.source=zero"]
    with pytest.raises(ConfigError, match="intervention=mib needs pairs.source=counterfactual"):
        trace_run(compose_cfg(tmp_path / "zero", bad, config_name="trace"))


def test_greedy_stops_at_the_largest_size_asked_for_not_at_pgbcts_set(trained_model, tmp_path):
    fast = [f"model.path={trained_model}", *TRACE_FAST, "search.epochs=2", "baselines.methods=[greedy,all]"]
    metrics = trace_run(compose_cfg(tmp_path, [*fast, "select.k=5", "baselines.sizes=[2]"], "trace"))
    assert metrics["greedy/forwards"] == 8 + 7 + 1  # two rounds over 8 heads, then the order's rest
    assert "greedy/k5/effect_heldout" in metrics  # PGB-CT's 5 still compared, by greedy's order


def test_trace_records_each_methods_peak_memory(trace_dir):
    metrics = json.loads((trace_dir / "metrics.json").read_text())
    methods = ["pgbct", "topk", "greedy", "greedy_backward", "atp", "atp_ig", "hardconcrete", "random", "all"]
    for method in methods:
        assert metrics[f"{method}/peak_mb"] >= 0.0, method
    assert (trace_dir / "metrics.json").read_text().count("/peak_mb") == len(methods)


def test_peak_memory_counts_a_block_that_reuses_memory_an_earlier_block_freed():
    import torch

    from catlit.tracing.memory import peak_memory

    rises = []
    for _ in range(3):  # 200 MB in 4 MB tensors, freed at the end of each block
        with peak_memory(torch.device("cpu")) as memory:
            tensors = [torch.ones(1000, 1000) for _ in range(50)]
            del tensors
        rises.append(memory["mb"])
    assert all(rise > 150 for rise in rises), rises  # freed memory kept resident once showed ~0 MB


def test_resume_auto_skips_a_finished_trace_adds_methods_it_lacks_and_restarts_an_unfinished_one(
    trained_model, tmp_path
):
    fast = [f"model.path={trained_model}", *TRACE_FAST, "baselines.methods=[atp,all]", "search.epochs=2"]
    cfg = compose_cfg(tmp_path, [*fast, "resume=auto"], "trace")
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "selection.json").write_text("{}")  # a trace killed before it wrote its metrics
    first = trace_run(cfg)
    aside = [p for p in run_dir.iterdir() if p.name.startswith(".stopped-")]
    assert len(aside) == 1 and (aside[0] / "selection.json").read_text() == "{}"  # kept, not deleted
    finished = (run_dir / "metrics.json").stat().st_mtime_ns
    same = json.dumps(trace_run(cfg), sort_keys=True) == json.dumps(first, sort_keys=True)
    assert same  # finished: skipped, its metrics returned (NaN-safe comparison)
    assert (run_dir / "metrics.json").stat().st_mtime_ns == finished
    grown = compose_cfg(tmp_path, [*fast, "baselines.methods=[random,all]", "resume=auto"], "trace")
    saved = {p.name: p.stat().st_mtime_ns for p in (run_dir / "methods").iterdir()}
    added = trace_run(grown)  # finished, but without random: random is added and nothing is lost
    assert "random/k3/effect_heldout" not in first and "random/k3/effect_heldout" in added
    for key in ("pgbct/effect_train", "atp/k3/effect_heldout", "atp/cpr"):
        assert added[key] == pytest.approx(first[key]), key  # read from methods/, not recomputed
    assert {n: (run_dir / "methods" / n).stat().st_mtime_ns for n in saved} == saved
    assert store_names(run_dir) == ["all.pt", "atp.pt", "pgbct.pt", "random.pt"]
    (run_dir / "heldout.json").unlink()  # a trace finished before runs recorded their pairs
    paired = trace_run(grown)
    assert (run_dir / "heldout.json").is_file() and "random/k3" in json.loads(
        (run_dir / "heldout.json").read_text()
    )["effects"]
    assert paired["atp/k3/effect_heldout"] == pytest.approx(added["atp/k3/effect_heldout"])
    assert store_names(run_dir) == ["all.pt", "atp.pt", "pgbct.pt", "random.pt"]  # read, nothing rerun
    fresh = compose_cfg(tmp_path, fast, "trace")  # without resume a finished trace is never overwritten
    with pytest.raises(FileExistsError, match="already holds a trace"):
        trace_run(fresh)
    with pytest.raises(ValueError, match="resume='yes': null"):
        trace_run(compose_cfg(tmp_path / "bad", [*fast, "resume=yes"], "trace"))


def store_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "methods").iterdir())


def test_resume_auto_continues_an_interrupted_trace_from_the_methods_it_finished(
    trained_model, tmp_path, monkeypatch, capsys
):
    from catlit.tracing import run as trace_recipe

    fast = [f"model.path={trained_model}", *TRACE_FAST, "baselines.methods=[atp,topk,all]", "search.epochs=2"]
    whole = trace_run(compose_cfg(tmp_path / "whole", fast, "trace"))
    cfg = compose_cfg(tmp_path / "cut", [*fast, "resume=auto"], "trace")
    run_dir = Path(cfg.paths.output_dir)

    def interrupted(ctx):
        raise KeyboardInterrupt  # the machine taken back while topk ran

    monkeypatch.setitem(trace_recipe.BASELINES, "topk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trace_run(cfg)
    monkeypatch.undo()
    kept = {p.name: p.stat().st_mtime_ns for p in (run_dir / "methods").iterdir()}
    assert sorted(kept) == ["atp.pt", "pgbct.pt"] and not (run_dir / "metrics.json").exists()
    capsys.readouterr()
    resumed = trace_run(cfg)
    out = capsys.readouterr().out
    assert "pgbct: finished before, read from" in out and "atp: finished before, read from" in out
    assert store_names(run_dir) == ["all.pt", "atp.pt", "pgbct.pt", "topk.pt"]  # the rest ran and were kept
    assert {name: (run_dir / "methods" / name).stat().st_mtime_ns for name in kept} == kept  # read, not rerun
    for key in ("pgbct/effect_train", "atp/k3/effect_heldout", "topk/k3/effect_train", "atp/cpr"):
        assert resumed[key] == pytest.approx(whole[key]), key  # what an uninterrupted trace computes
    assert resumed["pgbct/wall_s"] == pytest.approx(whole["pgbct/wall_s"], rel=10)  # its own time, kept

    shutil.rmtree(run_dir / "plots")
    (run_dir / "metrics.json").unlink()  # unfinished again, resumed with another search: refused
    other = compose_cfg(tmp_path / "cut", [*fast, "resume=auto", "search.lr.heads=0.5"], "trace")
    with pytest.raises(
        ValueError, match=r"methods/\w+.pt was computed with other settings .*search.lr.heads: 0.1 -> 0.5"
    ):
        trace_run(other)

    import torch

    for file in (run_dir / "methods").glob("*.pt"):  # kept before `intervention` was a setting
        saved = torch.load(file, weights_only=True)
        del saved["settings"]["intervention"]
        saved["settings"]["default_model.dir"] = "/old/checkout/trace_models/m"  # kept when it was a setting
        torch.save(saved, file)
    moved = compose_cfg(
        tmp_path / "cut", [*fast, "resume=auto", "default_model.dir=/moved/trace_models/m"], "trace"
    )
    assert trace_run(moved)["atp/cpr"] == pytest.approx(
        whole["atp/cpr"]
    )  # catlit's, another checkout: resumes
    shutil.rmtree(run_dir / "plots")
    (run_dir / "metrics.json").unlink()
    mib = compose_cfg(tmp_path / "cut", [*fast, "resume=auto", "intervention=mib"], "trace")
    with pytest.raises(ValueError, match="intervention: 'catlit' -> 'mib'"):
        trace_run(mib)


def test_pairs_sample_draws_across_the_loaders_order_and_is_seeded():
    from catlit.tracing.run import sample_pairs

    pairs = list(range(2703))  # Professions: 29 x 17 female-stereotyped pairs first, then 130 x 17 male
    first = sample_pairs(pairs, 100, seed=1)
    assert len(first) == len(set(first)) == 100 and first == sorted(first)
    assert sum(i < 29 * 17 for i in first) < 40 and max(first) > 29 * 17  # both lists, not the first 100
    assert sample_pairs(pairs, 100, seed=1) == first != sample_pairs(pairs, 100, seed=2)
    assert sample_pairs(pairs[:10], 100, seed=1) == pairs[:10]


def test_every_tracing_experiment_composes_with_its_task_and_model(tmp_path):
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("trace_*.yaml"))
    assert experiments == [f"trace_{t}_smollm2" for t in ("ioi", "professions", "winobias", "winogender")]
    for name in experiments:
        cfg = compose_cfg(tmp_path, [f"experiment={name}"], config_name="trace")
        task = name.split("_")[1]
        assert cfg.pairs.loader._target_ == f"catlit.tracing.datasets.{task}", name
        assert cfg.model.path == "HuggingFaceTB/SmolLM2-135M-Instruct" and cfg.task_name == name
        assert cfg.search.loss == "pooled" and "all" in cfg.baselines.methods
    professions = compose_cfg(tmp_path, ["experiment=trace_professions_smollm2"], config_name="trace")
    assert professions.components == ["mlp"] and professions.pairs.sample == 100
    assert not {"topk", "greedy", "greedy_backward"} & set(professions.baselines.methods)
