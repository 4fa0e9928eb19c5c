"""Data sources that Hydra instantiates from `conf/data/*.yaml`; each one returns `Splits`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from catlit.data.generated import Splits, generate_splits
from catlit.data.jsonl import read_jsonl
from catlit.data.stg_family import STGFamily
from catlit.data.stg_h import STGH
from catlit.data.stg_released import ReleasedSTG

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

# Named STG presets. `toy` is the embedded default's task: learnable in a few CPU minutes in
# distribution, while its training-time spurious cue (a value that tracks the label) makes a model
# that relies on it fail once that cue turns independent out of distribution.
STG_PRESETS = {
    "released": lambda: ReleasedSTG(n_train=1600),
    "released_m": lambda: ReleasedSTG(n_train=800),
    "released_s": lambda: ReleasedSTG(n_train=400),
    "released_intended": lambda: ReleasedSTG(n_train=1600, label_rule="intended"),
    "toy": lambda: STGFamily(
        name="stg_toy",
        n_causal=2,
        n_spurious=1,
        n_unrelated=1,
        spurious_mode="label",
        spurious_strength=1.0,
        n_train=1000,
    ),
    "family": STGFamily,
}


def _with_params(generator, params: dict | None, owner: str):
    if not params:
        return generator
    known = {f.name for f in dataclasses.fields(generator)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; valid: {sorted(known)}")
    return dataclasses.replace(generator, **dict(params))


class STGSource:
    """A Spurious Token Game preset (see STG_PRESETS) with optional field overrides in `params`."""

    task = "stg"

    def __init__(self, preset: str = "toy", seed: int = 0, params: dict | None = None):
        if preset not in STG_PRESETS:
            raise ValueError(
                f"data.preset={preset!r} is not an STG preset; choose from {sorted(STG_PRESETS)}"
            )
        self.preset, self.seed = preset, seed
        self.generator = _with_params(STG_PRESETS[preset](), params, f"data.params (preset {preset})")

    def load(self) -> Splits:
        return generate_splits(self.generator, self.seed)


class STGHSource:
    task = "stg_h"

    def __init__(self, seed: int = 0, params: dict | None = None):
        self.seed = seed
        self.generator = _with_params(STGH(), params, "data.params (stg_h)")

    def load(self) -> Splits:
        return generate_splits(self.generator, self.seed)


class JsonlSource:
    """Released-format JSONL files: one train file and named val / test files."""

    def __init__(
        self,
        train: str,
        val: dict[str, str] | None = None,
        test: dict[str, str] | None = None,
        task: str = "exact",
        limit: int | None = None,
        bad_annotations: str = "raise",
    ):
        if not test:
            raise ValueError("data.test must name at least one test split, e.g. {iid: path}")
        self.task, self.limit, self.bad_annotations = task, limit, bad_annotations
        self.train_path = Path(train)
        self.val_paths = {k: Path(v) for k, v in (val or {}).items()}
        self.test_paths = {k: Path(v) for k, v in test.items()}

    def load(self) -> Splits:
        train = read_jsonl(self.train_path, self.limit, self.bad_annotations)
        test = {k: read_jsonl(p, self.limit, self.bad_annotations) for k, p in self.test_paths.items()}
        val = {k: read_jsonl(p, self.limit, self.bad_annotations) for k, p in self.val_paths.items()}
        if not val:  # validate on the first test split rather than carve rows out of train
            name = next(iter(test))
            log.info("no data.val files: validating on test split %r", name)
            val = {name: test[name]}
        return Splits(train=train, val=val, test=test)


# ---- DataModule factories: what `conf/data/*.yaml` instantiate, so that source options
# (data.preset, data.params) and loader options (data.batch_size) sit side by side. ----------------


def stg_datamodule(preset: str = "toy", seed: int = 0, params: dict | None = None, **loader):
    from catlit.data.datamodule import CatDataModule

    return CatDataModule(STGSource(preset, seed, params), **loader)


def stg_h_datamodule(seed: int = 0, params: dict | None = None, **loader):
    from catlit.data.datamodule import CatDataModule

    return CatDataModule(STGHSource(seed, params), **loader)


def jsonl_datamodule(
    train: str,
    test: dict[str, str],
    val: dict[str, str] | None = None,
    task: str = "exact",
    limit: int | None = None,
    bad_annotations: str = "raise",
    **loader,
):
    from catlit.data.datamodule import CatDataModule

    return CatDataModule(JsonlSource(train, val, test, task, limit, bad_annotations), **loader)
