"""Splitting a seeded task generator into train / val / named test splits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from catlit.data.example import Example


class TaskGenerator(Protocol):
    """A seeded generator of examples; `ood=True` draws from the shifted distribution."""

    name: str
    n_train: int
    n_val: int
    n_iid: int
    n_ood: int

    def sample(self, rng: random.Random, ood: bool) -> Example: ...


@dataclass
class Splits:
    """What every source hands the DataModule: one train list and named val / test splits."""

    train: list[Example]
    val: dict[str, list[Example]]
    test: dict[str, list[Example]]

    def sizes(self) -> dict[str, int]:
        out = {"train": len(self.train)}
        out.update({f"val/{k}": len(v) for k, v in self.val.items()})
        out.update({f"test/{k}": len(v) for k, v in self.test.items()})
        return out


def _draw(gen: TaskGenerator, n: int, seed: int, ood: bool, split: str) -> list[Example]:
    # One independent stream per split: changing a test size never changes the training data.
    rng = random.Random(f"{gen.name}/{split}/{seed}")
    rows = []
    for i in range(n):
        ex = gen.sample(rng, ood)
        rows.append(Example(ex.input, ex.target, ex.important, f"{gen.name}:{split}:{i}", ex.meta))
    return rows


def generate_splits(gen: TaskGenerator, seed: int) -> Splits:
    return Splits(
        train=_draw(gen, gen.n_train, seed, False, "train"),
        val={
            "iid": _draw(gen, gen.n_val, seed, False, "val_iid"),
            "ood": _draw(gen, gen.n_val, seed, True, "val_ood"),
        },
        test={
            "iid": _draw(gen, gen.n_iid, seed, False, "test_iid"),
            "ood": _draw(gen, gen.n_ood, seed, True, "test_ood"),
        },
    )
