"""report.py aggregates real run directories (config.yaml + metrics.json) over seeds."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from catlit.report import main
from tests.conftest import compose_cfg


def fake_run(tmp_path, name: str, overrides: list[str], iid: float, ood: float):
    cfg = compose_cfg(tmp_path / "compose" / name, overrides)
    run = tmp_path / "sweep" / name
    run.mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    (run / "metrics.json").write_text(json.dumps({"test/iid/acc": iid, "test/ood/acc": ood}))


def test_report_means_stds_and_gap_closed(tmp_path, capsys):
    for seed, (iid, ood) in enumerate([(1.0, 0.6), (0.98, 0.64)]):
        fake_run(tmp_path, f"b{seed}", ["method=baseline", f"seed={seed}"], iid, ood)
    for seed, (iid, ood) in enumerate([(0.99, 0.79), (0.97, 0.83)]):
        fake_run(tmp_path, f"c{seed}", ["method=cat", "method.alpha=8", f"seed={seed}"], iid, ood)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| stg (toy) | baseline | 2 | 99.0 ± 1.4 | 62.0 ± 2.8 | - | - |" in out
    # gap 99 - 62 = 37 points; CAT gains 81 - 62 = 19 points of it: 51%; IID 98 vs 99
    assert "| stg (toy) | cat α=8 γ=1.0 | 2 | 98.0 ± 1.4 | 81.0 ± 2.8 | 51% | -1.0 |" in out
    for name in ("report.md", "report.csv", "report.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0


def test_report_without_runs_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
