"""Answer extraction per task."""

from __future__ import annotations

import pytest

from catlit.eval.scoring import get_scorer


@pytest.mark.parametrize(
    "task,prediction,target,ok",
    [
        ("stg", " High Risk", "High Risk", True),
        ("stg", "High Risk\nLow Risk", "High Risk", True),
        ("stg", " Low Risk", "High Risk", False),
        ("stg", "High", "High Risk", False),
        ("stg_h", " 57", "57", True),
        ("stg_h", "57 (moderate)", "57", True),
        ("stg_h", " 58", "57", False),
        ("stg_h", " none", "57", False),
        ("stg_h", " 41.7", "41", False),  # a decimal that is not the integer is wrong, not truncated
        ("stg_h", " 41.0", "41", True),
        ("stg_h", "-3", "-3", True),
        ("exact", " 84.0 ", "84.0", True),
    ],
)
def test_scorers(task, prediction, target, ok):
    assert get_scorer(task)(prediction, target) is ok


def test_unknown_task():
    with pytest.raises(ValueError, match="no scorer for task 'poetry'"):
        get_scorer("poetry")


def test_indexed_accuracy_counts_each_example_once():
    import torch

    from catlit.eval.metrics import IndexedMean

    metric = IndexedMean()
    metric.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 1.0]))
    metric.update(torch.tensor([3, 0]), torch.tensor([1.0, 1.0]))  # index 0 repeated (sampler padding)
    assert metric.compute().item() == 0.75 and metric.count() == 4
