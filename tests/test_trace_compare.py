"""catlit-trace-compare: every method at the PGB-CT set's size, over several trace runs."""

from __future__ import annotations

import dataclasses
import json

from catlit.tracing.compare import main
from catlit.tracing.settings import SearchSettings
from tests.helpers.traces import hydra_record


def row_names(table: str) -> list[str]:
    """The method of each row of a compare table, below its size and all-components rows."""
    return [line.split(" | ")[0][2:] for line in table.splitlines()[4:] if line.startswith("| ")]


def trace_run(folder, size: int, effects: dict[str, dict[int, float]], full: float) -> None:
    folder.mkdir(parents=True)
    metrics = {"pgbct/size": size, "all/k8/effect_heldout": full}
    for method, by_size in effects.items():
        metrics.update({f"{method}/k{k}/effect_heldout": v for k, v in by_size.items()})
    (folder / "selection.json").write_text("{}")
    (folder / "metrics.json").write_text(json.dumps(metrics))  # written last: a finished run


def test_methods_are_compared_at_each_runs_pgbct_size_as_shares_of_all(tmp_path, capsys):
    trace_run(tmp_path / "s1", 2, {"pgbct": {2: 80.0, 5: 90.0}, "topk": {2: 40.0, 5: 95.0}}, 100.0)
    trace_run(tmp_path / "s2", 5, {"pgbct": {2: 1.0, 5: 9.0}, "topk": {2: 1.0, 5: 7.0}}, 10.0)
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "selection.json").write_text("{}")  # unfinished: no metrics.json, skipped
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | s1 | s2 | mean ± 95% |\n|---|---|---|---|\n| *size k* | 2 | 5 |  |\n")
    assert "| *all components' effect* | 100 | 10 |  |" in out
    assert "| pgbct | 0.800 | 0.900 | 0.850 ± " in out  # (0.8 + 0.9) / 2: each run at its own size
    assert "| topk | 0.400 | 0.700 | 0.550 ± " in out
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--size", "5"]) == 0
    out = capsys.readouterr().out
    assert "| *size k* | 5 | 5 |  |" in out and "| topk | 0.950 | 0.700 | 0.825 ± " in out
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"compare.md", "compare.csv", "compare.png", "compare_k5.md"} <= names


def test_no_finished_run_is_one_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no finished trace run" in capsys.readouterr().out


def test_unfinished_and_damaged_runs_are_named_and_counted_not_dropped_silently(tmp_path, capsys):
    trace_run(tmp_path / "s1", 2, {"pgbct": {2: 80.0}}, 100.0)
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "selection.json").write_text("{}")  # unfinished
    trace_run(tmp_path / "s3", 2, {"pgbct": {2: 1.0}}, 10.0)
    (tmp_path / "s3" / "metrics.json").write_text('{"pgbct/size": 2, "all/k8/eff')  # truncated
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("| method | s1 | mean ± 95% |")
    assert "| pgbct | 0.800 | 0.800 |" in captured.out
    assert f"skipped {tmp_path / 's2'}: unfinished" in captured.err
    assert f"skipped {tmp_path / 's3' / 'metrics.json'}: unreadable (JSONDecodeError" in captured.err
    assert "2 trace run(s) skipped" in captured.err


def test_a_run_traced_before_a_default_changed_is_named_by_what_it_ran_with(tmp_path, capsys):
    today = SearchSettings.preset()
    before = {"search": {**dataclasses.asdict(today), "loss": "scaled"}}  # the default loss until it changed
    trace_run(
        tmp_path / "old" / "s1", 1, {"pgbct": {5: 20.0}, "hardconcrete": {5: 10.0}, "atp": {5: 5.0}}, 100.0
    )
    hydra_record(tmp_path / "old" / "s1", 1, recorded=before)
    trace_run(tmp_path / "asked" / "s2", 1, {"pgbct": {5: 40.0}}, 100.0)  # the same loss, asked for by name
    hydra_record(tmp_path / "asked" / "s2", 2, overrides=("search.loss=scaled",), recorded=before)
    trace_run(tmp_path / "new" / "s1", 1, {"pgbct": {5: 60.0}, "hardconcrete": {5: 70.0}}, 100.0)
    hydra_record(tmp_path / "new" / "s1", 1, recorded={"search": dataclasses.asdict(today)})
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--size", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | seed 2 | seed 1 |")
    assert "| pgbct | - | 0.600 | 0.600 |" in out  # today's default
    assert "| pgbct (default, search.loss=scaled) | 0.400 | 0.200 |" in out  # one row: one setting, two seeds
    # hard-concrete trains with the search's settings: a row per setting, as PGB-CT's; AtP does not
    assert row_names(out) == [
        "pgbct",
        "pgbct (default, search.loss=scaled)",
        "atp",
        "hardconcrete",
        "hardconcrete (default, search.loss=scaled)",
    ]
    assert "| hardconcrete | - | 0.700 | 0.700 |" in out and "| atp | - | 0.050 | 0.050 |" in out
    runs = (tmp_path / "out" / "runs.md").read_text()  # the command re-runs what it ran with
    assert f"`python trace.py seed=1 search.loss=scaled hydra.run.dir={tmp_path / 'old' / 's1'}`" in runs
    assert f"`python trace.py seed=1 hydra.run.dir={tmp_path / 'new' / 's1'}`" in runs


def test_other_search_settings_are_labelled_and_stand_beside_their_seeds_baselines(tmp_path, capsys):
    for seed, full in ((1, 100.0), (2, 10.0)):
        trace_run(tmp_path / "main" / f"s{seed}", 2, {"pgbct": {5: full / 2}, "topk": {5: full / 4}}, full)
        hydra_record(tmp_path / "main" / f"s{seed}", seed)
        trace_run(tmp_path / "paper" / f"s{seed}", 3, {"pgbct": {5: full}}, full)
        hydra_record(tmp_path / "paper" / f"s{seed}", seed, "paper")
    trace_run(tmp_path / "inverse" / "s1", 1, {"pgbct": {5: 30.0}}, 100.0)
    hydra_record(tmp_path / "inverse" / "s1", 1, overrides=("search.loss=inverse",))
    trace_run(tmp_path / "last" / "s1", 1, {"pgbct": {5: 40.0}}, 100.0)  # what is searched, changed
    hydra_record(
        tmp_path / "last" / "s1",
        1,
        overrides=("model=x", "positions=last", "intervention=mib", "baselines.methods=[all]"),
    )
    trace_run(tmp_path / "other_pairs" / "s1", 1, {"pgbct": {5: 3.0}}, 7.0)  # seed 1, other pairs: own row
    hydra_record(tmp_path / "other_pairs" / "s1", 1, "ranking")
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--size", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| method | seed 1 · main/s1 | seed 2 | seed 1 · other_pairs/s1 | mean ± 95% |")
    assert "| *all components' effect* | 100 | 10 | 7 |  |" in out  # seed 1 on other pairs: its own column
    assert row_names(out) == [
        "pgbct",
        "pgbct (default, positions=last, intervention=mib)",
        "pgbct (default, search.loss=inverse)",
        "pgbct (paper)",
        "pgbct (ranking)",
        "topk",
    ]
    assert "| pgbct | 0.500 | 0.500 | - | 0.500 ± 0.000 |" in out
    assert "| pgbct (default, positions=last, intervention=mib) | 0.400 | - | - | 0.400 |" in out  # 1 run
    assert "| pgbct (paper) | 1.000 | 1.000 | - | 1.000 ± 0.000 |" in out
    assert "| pgbct (ranking) | - | - | 0.429 | 0.429 |" in out  # seed 1, other pairs: own column
    assert "| topk | 0.250 | 0.250 | - | 0.250 ± 0.000 |" in out
    runs = (tmp_path / "out" / "runs.md").read_text().splitlines()  # each column's runs, re-runnable
    last = tmp_path / "last" / "s1"
    assert (
        "- seed 1 · main/s1: `python trace.py seed=1 model=x positions=last intervention=mib "
        f"'baselines.methods=[all]' hydra.run.dir={last}`" in runs
    )
    assert sum(line.startswith("- seed 1 · main/s1: ") for line in runs) == 4  # main, paper, inverse, last
    assert (
        sum(line.startswith("- seed 2: ") for line in runs) == 2
        and sum(line.startswith("- seed 1 · other_pairs/s1: ") for line in runs) == 1
    )


def test_faithfulness_and_cost_are_averaged_over_runs_and_plotted(tmp_path, capsys):
    for seed, (cpr, wall) in enumerate(((0.6, 10.0), (0.8, 30.0)), start=1):
        folder = tmp_path / f"s{seed}"
        trace_run(folder, 2, {"pgbct": {2: 50.0}, "atp": {2: 40.0}}, 100.0)
        metrics = json.loads((folder / "metrics.json").read_text())
        for method in ("pgbct", "atp", "all"):
            metrics.update(
                {f"{method}/wall_s": wall, f"{method}/forwards": 4, f"{method}/peak_mb": 100.0 * seed}
            )
        metrics.update({"pgbct/cpr": cpr, "pgbct/cmd": 1 - cpr, "pgbct/backwards": 2, "atp/cmd": 0.5})
        metrics.update({"pgbct/curve/k0/sufficiency": 0.0, "pgbct/curve/k8/sufficiency": 1.0})
        (folder / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    head = "| method | s1 | s2 | mean ± 95% | CPR ↑ | CMD ↓ | forwards | backwards | wall | peak memory |"
    assert out.startswith(head)
    assert "| pgbct | 0.500 | 0.500 | 0.500 ± 0.000 | 0.700 ± " in out
    assert "| 4 | 2 | 20 s | 150 MB |" in out  # means over the runs
    assert "| atp | 0.400 | 0.400 | 0.400 ± 0.000 | - | 0.500 ± 0.000 | 4 | - | 20 s | 150 MB |" in out
    assert "\n| all |" not in out  # the reference, not a method
    assert "faithfulness on MIB's grid" in (tmp_path / "out" / "compare.md").read_text()
    assert (tmp_path / "out" / "faithfulness.png").stat().st_size > 0


def test_figures_stay_readable_with_many_settings(tmp_path):
    import struct

    from catlit.plotting import pyplot
    from catlit.tracing.plots import legend_beside, series_style

    styles = [series_style(i, "pgbct" if i < 14 else "topk") for i in range(40)]
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 40  # no two series drawn alike
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    for i in range(25):
        ax.plot([0, 1], [i, i], label=f"pgbct (default, search.loss=relative, search.lambda1={i})")
    legend_beside(ax)
    width, height = fig.get_size_inches()
    fig.savefig(tmp_path / "f.png", dpi=100)
    plt.close(fig)
    assert width > 7.0 and height > 3.0  # widened by the legend, and tall enough for its 25 rows
    png_width, png_height = struct.unpack(">II", (tmp_path / "f.png").read_bytes()[16:24])
    assert abs(png_width - width * 100) < 1 and abs(png_height - height * 100) < 1  # the saved figure


def test_settings_an_experiment_sets_are_not_taken_for_a_changed_default(tmp_path, capsys):
    from catlit.tracing.compare import search_setting

    today = {**dataclasses.asdict(SearchSettings.preset()), "epochs": 30}  # the experiment's own epochs
    for name, loss in (("now", "pooled"), ("before", "scaled")):
        (tmp_path / name).mkdir()
        recorded = {"search": {**today, "loss": loss}}
        hydra_record(
            tmp_path / name, 1, overrides=("experiment=trace_professions_smollm2",), recorded=recorded
        )
    assert search_setting(tmp_path / "now") == ""
    assert search_setting(tmp_path / "before") == "default, search.loss=scaled"
    (tmp_path / "gone").mkdir()  # an option renamed since: named in a warning, compared with nothing
    hydra_record(tmp_path / "gone", 1, overrides=("pairs=renamed",), recorded={"search": {"loss": "scaled"}})
    assert search_setting(tmp_path / "gone") == ""
    assert f"warning: {tmp_path / 'gone'}: its overrides no longer compose" in capsys.readouterr().err


def test_records_regenerate_and_extend_the_tables_without_the_runs(tmp_path, capsys):
    """--records copies each run's few-KB record beside the tables; the tables are then rebuilt from
    the records alone (the runs deleted), and a new run joins them, with commands naming the runs'
    own folders; a record of a run that is compared itself is not counted twice."""
    import shutil

    runs = tmp_path / "outputs" / "grid"
    for seed in (1, 2):
        trace_run(runs / str(seed - 1), 2, {"pgbct": {2: 40.0 * seed}}, 100.0)
        hydra_record(runs / str(seed - 1), seed)
    out = tmp_path / "docs"
    assert main([str(runs), "--out", str(out), "--records"]) == 0
    first = (out / "compare.md").read_text()
    record = out / "records" / "grid" / "0"
    assert {p.name for p in record.iterdir()} >= {"metrics.json", "selection.json", "config.yaml", ".hydra"}
    assert json.loads((record / "record.json").read_text()) == {"run_dir": str(runs / "0")}
    assert main([str(runs), str(out / "records"), "--out", str(out)]) == 0  # runs and their records
    assert (out / "compare.md").read_text() == first  # each run once
    shutil.rmtree(runs)
    trace_run(runs / "2", 2, {"pgbct": {2: 120.0}}, 100.0)  # a new seed, traced after
    hydra_record(runs / "2", 3)
    capsys.readouterr()
    assert main([str(out / "records"), str(runs), "--out", str(out), "--records"]) == 0
    out_text = capsys.readouterr().out
    assert "| pgbct | 0.400 | 0.800 | 1.200 | 0.800 ± " in out_text  # seeds 1-2 from records, 3 live
    commands = (out / "runs.md").read_text()
    assert f"hydra.run.dir={runs / '0'}" in commands and f"hydra.run.dir={runs / '2'}" in commands
    assert str(out / "records") not in commands
    assert (out / "records" / "grid" / "2" / "record.json").is_file()  # the new run kept too
    elsewhere = tmp_path / "other" / "grid" / "0"  # another run that would land on a record's place
    trace_run(elsewhere, 2, {"pgbct": {2: 1.0}}, 10.0)
    hydra_record(elsewhere, 1)
    try:
        main([str(elsewhere), "--out", str(out), "--records"])
    except FileExistsError as err:
        assert f"holds the record of {runs / '0'}" in str(err)
    else:
        raise AssertionError("a record of another run was overwritten")


def test_pairs_table_puts_an_interval_over_the_held_out_pairs_on_each_share(tmp_path, capsys):
    """A set that does what every component does on each pair has share 1 with no spread; one at half
    of it on every pair is separated from it; one that swings pair by pair is not."""
    full = [1.0, 2.0, 0.5, 1.5, 1.0, 3.0, 0.8, 1.2]
    swing = [1.4 * v if i % 2 else 0.0 for i, v in enumerate(full)]  # share 0.98, all on half the pairs
    for seed in (1, 2):
        folder = tmp_path / "grid" / str(seed - 1)
        effects = {"pgbct": full, "atp": [0.5 * v for v in full], "topk": swing}
        trace_run(folder, 2, {m: {2: sum(v) / len(v)} for m, v in effects.items()}, sum(full) / len(full))
        hydra_record(folder, seed)
        held = {"pairs": list(range(8)), "effects": {f"{m}/k2": v for m, v in effects.items()}}
        held["effects"]["all/k8"] = full
        (folder / "heldout.json").write_text(json.dumps(held))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "compare_pairs.md").write_text("an earlier comparison's table")
    assert main([str(tmp_path / "grid"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "compare_pairs.md").read_text()
    assert text.startswith("| method | seed 1 (8 pairs) | seed 2 (8 pairs) | with the best |")
    assert "| pgbct | 1.00 (1.00 to 1.00) best | 1.00 (1.00 to 1.00) best | 2 of 2 |" in text
    assert "| atp | 0.50 (0.50 to 0.50) | 0.50 (0.50 to 0.50) | 0 of 2 |" in text  # below on every resample
    topk = next(line for line in text.splitlines() if line.startswith("| topk |"))
    assert topk.count(" ~") == 2 and topk.endswith("| 2 of 2 |")  # the pairs do not separate it


def test_runs_traced_without_per_pair_effects_get_no_pairs_table(tmp_path):
    trace_run(tmp_path / "runs" / "s1", 2, {"pgbct": {2: 1.0}}, 2.0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "compare_pairs.md").write_text("stale: from runs compared before")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "compare_pairs.md").exists()
