"""catlit-trace-compare: every method at the PGB-CT set's size, over several trace runs."""

from __future__ import annotations

import json

from catlit.tracing.compare import main


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
    assert "| s1 | 2 | 100 | 0.800 | 0.400 |" in out and "| s2 | 5 | 10 | 0.900 | 0.700 |" in out
    assert "| mean ± 95% | | | 0.850 ± " in out  # (0.8 + 0.9) / 2: each run at its own size
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--size", "5"]) == 0
    assert "| s1 | 5 | 100 | 0.900 | 0.950 |" in capsys.readouterr().out
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
    assert "| s1 | 2 |" in captured.out and "| s3 |" not in captured.out
    assert f"skipped {tmp_path / 's2'}: unfinished" in captured.err
    assert f"skipped {tmp_path / 's3' / 'metrics.json'}: unreadable (JSONDecodeError" in captured.err
    assert "2 trace run(s) skipped" in captured.err
