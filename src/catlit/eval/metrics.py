"""A per-example mean (accuracy, absolute error, ...) that counts each example exactly once, across
processes.

Under DDP, Lightning's DistributedSampler pads every rank to the same length by repeating examples,
so a plain mean over all scored rows would count some twice. Each rank records (example index,
value); the synced states are gathered and de-duplicated by index before averaging.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class IndexedMean(Metric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, correct: torch.Tensor) -> None:
        self.index.append(index.long())
        self.correct.append(correct.float())

    def _unique(self) -> tuple[torch.Tensor, torch.Tensor]:
        index, correct = dim_zero_cat(self.index), dim_zero_cat(self.correct)
        unique, inverse = torch.unique(index, return_inverse=True)
        first = torch.full_like(unique, index.numel()).scatter_reduce(
            0, inverse, torch.arange(index.numel(), device=index.device), reduce="amin"
        )
        return unique, correct[first]

    def compute(self) -> torch.Tensor:
        if len(self.index) == 0:  # a list before the cross-process sync, one tensor after it
            return torch.tensor(float("nan"))
        return self._unique()[1].mean()

    def count(self) -> int:
        return int(self._unique()[0].numel()) if len(self.index) else 0
