"""`RunIf`: a marker that skips a test, saying why, where its hardware or package is missing
(lightning-hydra-template's `run_if` is the model)."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def RunIf(min_gpus: int = 0, package: str | None = None, bf16: bool = False):
    reasons = []
    if min_gpus and torch.cuda.device_count() < min_gpus:
        reasons.append(f"needs {min_gpus} CUDA GPU(s), found {torch.cuda.device_count()}")
    if package and importlib.util.find_spec(package) is None:
        reasons.append(f"needs the {package} package")
    if bf16 and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        reasons.append("needs a GPU with bfloat16")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "runs")
