"""report.py aggregates real run directories (config.yaml + metrics.json) over seeds."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from catlit.report import main
from tests.helpers.runs import compose_cfg


def fake_run(tmp_path, name: str, overrides: list[str], iid: float, ood: float):
    cfg = compose_cfg(tmp_path / "compose" / name, overrides)
    run = tmp_path / "sweep" / name
    run.mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    (run / "metrics.json").write_text(json.dumps({"test/iid/acc": iid, "test/ood/acc": ood}))


def test_report_means_intervals_and_gap_closed(tmp_path, capsys):
    for seed, (iid, ood) in enumerate([(1.0, 0.6), (0.98, 0.64)]):
        fake_run(tmp_path, f"b{seed}", ["method=baseline", f"seed={seed}"], iid, ood)
    for seed, (iid, ood) in enumerate([(0.99, 0.79), (0.97, 0.83)]):
        fake_run(tmp_path, f"c{seed}", ["method=cat", "method.alpha=8", f"seed={seed}"], iid, ood)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    # two seeds: mean ± t(0.975, 1) * std / sqrt(2) = 12.706 * 1.414 / 1.414
    assert "| stg (toy) | baseline | 2 | 99.0 ± 12.7 | 62.0 ± 25.4 | - | - |" in out
    # gap 99 - 62 = 37 points; CAT gains 81 - 62 = 19 points of it: 51%; IID 98 vs 99. Paired by
    # seed, both seeds gain exactly 19 OOD points and lose 1 IID point: intervals of zero width
    assert "| stg (toy) | cat α=8 γ=1.0 | 2 | 98.0 ± 12.7 | 81.0 ± 25.4 | 51% ± 0 | -1.0 ± 0.0 |" in out
    for name in ("report.md", "report.csv", "report.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0
    header = (tmp_path / "sweep" / "report.csv").read_text().splitlines()[0].split(",")
    assert {"seeds", "gap_closed", "iid_change", "iid_ci95", "ood_ci95"} <= set(header)
    assert {"gap_closed_ci95", "iid_change_ci95"} <= set(header)


def test_gap_closed_interval_pairs_seeds_and_falls_back_to_welch(tmp_path, capsys):
    for seed, (iid, ood) in enumerate([(1.0, 0.6), (1.0, 0.7), (1.0, 0.5)]):
        fake_run(tmp_path, f"b{seed}", ["method=baseline", f"seed={seed}"], iid, ood)
    for seed, ood in enumerate([0.7, 0.8, 0.6]):  # +10 points on every seed: paired interval 0
        fake_run(tmp_path, f"c{seed}", ["method=cat", f"seed={seed}"], 1.0, ood)
    for seed, ood in zip((5, 6, 7), [0.7, 0.8, 0.6]):  # the same values on other seeds: Welch's
        fake_run(tmp_path, f"d{seed}", ["method=cat", "method.alpha=8", f"seed={seed}"], 1.0, ood)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "α=2.0 | 3 | 100.0 ± 0.0 | 70.0 ± 24.8 | 25% ± 0 | +0.0 ± 0.0 |" in out
    # Welch: sd 10 on both sides, se = sqrt(2 * 100 / 3) = 8.16, dof 4, t = 2.776: 22.7 points / 40
    assert "α=8 | 3 | 100.0 ± 0.0 | 70.0 ± 24.8 | 25% ± 57 | +0.0 ± 0.0 |" in out


def test_report_never_mixes_settings_and_counts_distinct_seeds(tmp_path, capsys):
    fake_run(tmp_path, "b0", ["method=baseline", "seed=0"], 1.0, 1.0)  # no gap: no nan%
    fake_run(tmp_path, "b1", ["method=baseline", "seed=1"], 1.0, 1.0)
    fake_run(tmp_path, "s0", ["method=baseline", "seed=0", "trainer.max_epochs=2"], 0.5, 0.5)
    fake_run(tmp_path, "s0again", ["method=baseline", "seed=0", "trainer.max_epochs=2"], 0.7, 0.5)
    fake_run(tmp_path, "c0", ["method=cat", "seed=0"], 0.9, 0.9)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| stg (toy) | baseline trainer.max_epochs=20 | 2 | 100.0 ± 0.0 | 100.0 ± 0.0 | - | - |" in out
    # the 2-epoch runs are their own setting, and a repeated seed counts once (its runs averaged)
    assert "| stg (toy) | baseline trainer.max_epochs=2 | 1 | 60.0 | 50.0 | - | - |" in out
    assert "nan" not in out
    assert "| stg (toy) | cat α=2.0 γ=1.0 | 1 | 90.0 | 90.0 | - | -10.0 |" in out


def test_report_without_runs_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])


def test_report_reads_named_ood_splits_and_measures_gap_closed_on_their_mean(tmp_path, capsys):
    def acre_run(name, overrides, iid, comp, syst):
        cfg = compose_cfg(tmp_path / "compose" / name, ["data=acre", *overrides])
        run = tmp_path / "sweep" / name
        run.mkdir(parents=True)
        OmegaConf.save(cfg, run / "config.yaml", resolve=True)
        metrics = {"test/iid/acc": iid, "test/compositional/acc": comp, "test/systematic/acc": syst}
        (run / "metrics.json").write_text(json.dumps(metrics))

    acre_run("lora", ["method=lora"], 0.8, 0.5, 0.3)
    acre_run("iclm", ["method=iclm"], 0.8, 0.7, 0.4)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| IID acc | compositional acc | systematic acc | OOD mean | gap closed |" in out
    assert "| acre | iclm mode=dense | 1 | 80.0 | 70.0 | 40.0 | 55.0 | - | - |" in out  # no baseline run
    assert main([str(tmp_path / "sweep"), "--baseline", "lora"]) == 0
    out = capsys.readouterr().out
    # OOD mean: lora 40, iclm 55; gap 80 - 40 = 40 points, of which iclm closes 15: 38%
    assert out.index("| acre | lora |") < out.index("| acre | iclm")
    assert "| acre | iclm mode=dense | 1 | 80.0 | 70.0 | 40.0 | 55.0 | 38% | +0.0 |" in out
    header = (tmp_path / "sweep" / "report.csv").read_text().splitlines()[0].split(",")
    assert {"compositional_mean", "systematic_mean", "ood_mean"} <= set(header)


def test_report_tables_accuracy_per_query_type_and_any_other_figure(tmp_path, capsys):
    for seed, (direct, potential, purity) in enumerate([(0.9, 0.2, 1.0), (0.7, 0.4, 0.5)], start=1):
        cfg = compose_cfg(tmp_path / "compose" / str(seed), ["data=acre", "method=iclm", f"seed={seed}"])
        run = tmp_path / "sweep" / str(seed)
        run.mkdir(parents=True)
        OmegaConf.save(cfg, run / "config.yaml", resolve=True)
        metrics = {
            "test/iid/acc": 0.6,
            "test/iid/by_query_type/direct/acc": direct,
            "test/iid/by_query_type/potential/acc": potential,
            "test/iid/routing_purity": purity,
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    argv = [str(tmp_path / "sweep"), "--by", "query_type", "--extra", "test/iid/routing_purity"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| data | setting | iid: direct | iid: potential |" in out
    # two seeds: mean ± t(1) * std / sqrt(2) = 80.0 ± 12.706 * 14.14 / 1.414
    assert "| acre | iclm mode=dense | 80.0 ± 127.1 | 30.0 ± 127.1 |" in out
    assert "| acre | iclm mode=dense | 75.0 ± 317.6 |" in out


def test_lora_and_full_fine_tuning_are_named_and_compared_with_their_own_baseline(tmp_path, capsys):
    for lora, (base_ood, cat_ood) in (("true", (0.6, 0.8)), ("false", (0.5, 0.6))):
        for seed in (0, 1):
            common = [f"seed={seed}", f"model.lora.enabled={lora}"]
            fake_run(tmp_path, f"b{lora}{seed}", ["method=baseline", *common], 1.0, base_ood)
            fake_run(tmp_path, f"c{lora}{seed}", ["method=cat", *common], 1.0, cat_ood)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| baseline LoRA | 2 |" in out and "| baseline full FT | 2 |" in out
    assert "| cat α=2.0 γ=1.0 LoRA | 2 | 100.0 ± 0.0 | 80.0 ± 0.0 | 50% ± 0 |" in out  # vs the LoRA baseline
    assert "| cat α=2.0 γ=1.0 full FT | 2 | 100.0 ± 0.0 | 60.0 ± 0.0 | 20% ± 0 |" in out


def test_a_run_that_only_tested_is_labelled_untuned(tmp_path, capsys):
    for seed in (0, 1):
        fake_run(tmp_path, f"u{seed}", ["method=baseline", "train=false", f"seed={seed}"], 0.5, 0.4)
    assert main([str(tmp_path / "sweep")]) == 0
    assert "| baseline untuned | 2 |" in capsys.readouterr().out
    for seed in (0, 1):  # beside fine-tuned runs: each named, and each compared with its own kind
        fake_run(tmp_path, f"t{seed}", ["method=baseline", f"seed={seed}"], 1.0, 0.6)
        fake_run(tmp_path, f"c{seed}", ["method=cat", f"seed={seed}"], 1.0, 0.8)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| baseline untuned | 2 |" in out and "| baseline fine-tuned | 2 |" in out
    assert "| cat α=2.0 γ=1.0 | 2 | 100.0 ± 0.0 | 80.0 ± 0.0 | 50% ± 0 |" in out


def test_a_run_config_naming_another_module_is_never_imported(tmp_path, capsys, monkeypatch):
    """config.yaml is data: a `_target_` outside catlit's methods is not imported to label a run."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass M: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for seed in (0, 1):
        fake_run(tmp_path, f"r{seed}", ["method=baseline", f"seed={seed}"], 1.0, 0.5)
        config = tmp_path / "sweep" / f"r{seed}" / "config.yaml"
        config.write_text(config.read_text().replace("catlit.methods.", "evil_module.M #"))
    assert main([str(tmp_path / "sweep")]) == 0
    assert not marker.exists() and "evil_module" not in sys.modules


def test_data_settings_that_come_with_the_dataset_stay_out_of_the_labels(tmp_path, capsys):
    for data in ("svamp", "mawps"):
        for fmt in ("raw", "chat"):
            fake_run(
                tmp_path,
                f"{data}{fmt}",
                [f"data={data}", f"data.prompt_format={fmt}", "train=false"],
                0.1,
                0.0,
            )
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    # nothing trained and the model's own forward predicts: the composed method is not the setting
    assert "| svamp | baseline data.prompt_format=chat untuned | 1 |" in out
    assert "data.train=" not in out and "data.test.ood=" not in out  # the data column names them


def test_per_seed_table_lists_every_setting_on_every_seed(tmp_path):
    for seed, (iid, ood) in enumerate([(1.0, 0.5), (0.9, 0.6)], start=1):
        fake_run(tmp_path, f"b{seed}", ["method=baseline", f"seed={seed}"], iid, ood)
    fake_run(tmp_path, "c1", ["method=cat", "seed=1"], 0.95, 0.8)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "per_seed.md").read_text()
    assert "| data | setting | seed 1 | seed 2 |" in table
    assert "| stg (toy) | baseline | 100.0 / 50.0 | 90.0 / 60.0 |" in table
    assert "| stg (toy) | cat α=2.0 γ=1.0 | 95.0 / 80.0 | - / - |" in table
