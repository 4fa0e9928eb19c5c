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
    val_is_test: bool = False  # no validation data exists: a test split stands in for it

    def sizes(self) -> dict[str, int]:
        out = {"train": len(self.train)}
        out.update({f"val/{k}": len(v) for k, v in self.val.items()})
        out.update({f"test/{k}": len(v) for k, v in self.test.items()})
        return out


def draw(
    gen: TaskGenerator, n: int, seed: int, ood, split: str, exclude: frozenset[str] = frozenset()
) -> list[Example]:
    """`n` rows of `gen.sample(rng, ood)` (`ood`: the distribution to draw from, a flag or a name).

    One independent stream per split: changing a test size never changes the training data. Prompts
    in `exclude` are drawn again, so a validation split never shares a prompt with a test split."""
    rng = random.Random(f"{gen.name}/{split}/{seed}")
    rows: list[Example] = []
    for _ in range(50 * max(n, 1)):
        if len(rows) == n:
            break
        ex = gen.sample(rng, ood)
        if ex.input not in exclude:
            rows.append(
                Example(ex.input, ex.target, ex.important, f"{gen.name}:{split}:{len(rows)}", ex.meta)
            )
    if len(rows) < n:
        raise ValueError(f"{gen.name}: could not draw {n} {split} rows outside the test splits")
    return rows


def generate_splits(gen: TaskGenerator, seed: int) -> Splits:
    """Train, val and test splits. Validation (where models and hyper-parameters are chosen, val/ood
    included) shares no prompt with the test splits, so test/ood is never tuned on."""
    test = {
        "iid": draw(gen, gen.n_iid, seed, False, "test_iid"),
        "ood": draw(gen, gen.n_ood, seed, True, "test_ood"),
    }
    held = frozenset(ex.input for rows in test.values() for ex in rows)
    return Splits(
        train=draw(gen, gen.n_train, seed, False, "train"),
        val={
            "iid": draw(gen, gen.n_val, seed, False, "val_iid", held),
            "ood": draw(gen, gen.n_val, seed, True, "val_ood", held),
        },
        test=test,
    )
