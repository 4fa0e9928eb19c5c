"""Data sources that Hydra instantiates from `conf/data/*.yaml`; each one returns `Splits`."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import random
from pathlib import Path

from catlit.data.acre import ACRE, SPLIT_KINDS, ACREBench
from catlit.data.evals import read_evals
from catlit.data.example import Example
from catlit.data.generated import Splits, draw, generate_splits
from catlit.data.jsonl import read_jsonl
from catlit.data.stg_family import STGFamily
from catlit.data.stg_h import STGH, ReleasedSTGH
from catlit.data.stg_released import ReleasedSTG

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


def _with_params(generator, params: dict | None, owner: str, limit: int | None = None):
    """The generator with `params` overriding its fields, and every split capped at `limit` rows."""
    if limit is not None:
        sizes = {
            k: min(getattr(generator, k), int(limit))
            for k in ("n_train", "n_val", "n_iid", "n_ood", "n_test")
            if hasattr(generator, k)
        }
        generator = dataclasses.replace(generator, **sizes)
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

    def __init__(
        self, preset: str = "toy", seed: int = 0, params: dict | None = None, limit: int | None = None
    ):
        if preset not in STG_PRESETS:
            raise ValueError(
                f"data.preset={preset!r} is not an STG preset; choose from {sorted(STG_PRESETS)}"
            )
        self.preset, self.seed = preset, seed
        self.generator = _with_params(STG_PRESETS[preset](), params, f"data.params (preset {preset})", limit)

    def load(self) -> Splits:
        return generate_splits(self.generator, self.seed)


STG_H_PRESETS = {"catlit": STGH, "released": ReleasedSTGH}


class STGHSource:
    """STG_H: `catlit` (a lighter variant the embedded model learns on CPU) or `released` (the
    authors' data-generating process and sizes), with optional field overrides in `params`."""

    task = "stg_h"

    def __init__(
        self, preset: str = "catlit", seed: int = 0, params: dict | None = None, limit: int | None = None
    ):
        if preset not in STG_H_PRESETS:
            raise ValueError(
                f"data.preset={preset!r} is not an STG_H preset; choose from {sorted(STG_H_PRESETS)}"
            )
        self.seed = seed
        self.generator = _with_params(STG_H_PRESETS[preset](), params, f"data.params (stg_h {preset})", limit)

    def load(self) -> Splits:
        return generate_splits(self.generator, self.seed)


ACRE_PRESETS = {"acre": ACREBench, "small": ACRE}
ACRE_TESTS = {"iid": "IID", "compositional": "Comp", "systematic": "Sys"}  # test split -> benchmark regime


class ACRESource:
    """ACRE blicket detection (catlit.data.acre), preset `acre` (the benchmark's process) or `small`.
    Test splits iid / compositional / systematic; no training or validation prompt is a test prompt."""

    task = "exact"

    def __init__(
        self, seed: int = 0, params: dict | None = None, limit: int | None = None, preset: str = "acre"
    ):
        if preset not in ACRE_PRESETS:
            raise ValueError(
                f"data.preset={preset!r} is not an ACRE preset; choose from {sorted(ACRE_PRESETS)}"
            )
        self.seed, self.preset = seed, preset
        self.generator = _with_params(ACRE_PRESETS[preset](), params, f"data.params (acre {preset})", limit)

    def _kind(self, split: str, test: str | None = None):
        if self.preset == "small":
            return test or "iid"
        regime = ACRE_TESTS[test] if test else self.generator.train_regime
        return regime, split

    def load(self) -> Splits:
        gen, seed = self.generator, self.seed
        test = {k: draw(gen, gen.n_test, seed, self._kind("test", k), f"test_{k}") for k in SPLIT_KINDS}
        held = frozenset(ex.input for rows in test.values() for ex in rows)
        return Splits(
            train=draw(gen, gen.n_train, seed, self._kind("train"), "train", held),
            val={"iid": draw(gen, gen.n_val, seed, self._kind("val"), "val_iid", held)},
            test=test,
        )


class ACREFilesSource:
    """The benchmark's own raw files (`<dir>/{IID,Comp,Sys}/{train,val,test}.json`, as published with
    ACRE), each query rendered in the chosen encodings: train and val from `train_regime`, test splits
    iid / compositional / systematic from the IID, Comp and Sys test files that exist."""

    task = "exact"

    def __init__(
        self,
        dir: str,
        train_regime: str = "IID",
        encodings=("text", "symbolic"),
        limit: int | None = None,
    ):
        from catlit.data.acre import ENCODINGS

        self.dir, self.train_regime, self.limit = Path(dir), train_regime, limit
        self.encodings = tuple(encodings)
        if not set(self.encodings) <= set(ENCODINGS) or not self.encodings:
            raise ValueError(f"data.encodings={list(self.encodings)}; choose from {ENCODINGS}")
        if not self.dir.is_dir():
            raise FileNotFoundError(f"data.dir={str(dir)!r}: no such folder (the ACRE raw files' root)")

    def _read(self, regime: str, split: str) -> list[Example]:
        from catlit.data.acre import render_problem
        from catlit.data.acre_benchmark import kinds_for, read_raw

        path = self.dir / regime / f"{split}.json"
        kinds = kinds_for(regime, split)
        rows = []
        for i, problem in enumerate(read_raw(path)):
            for j, query in enumerate(problem.queries):
                for encoding in self.encodings:
                    ex = render_problem(problem, query, encoding, kinds)
                    rows.append(Example(ex.input, ex.target, ex.important, f"{path}:{i}:{j}", ex.meta))
        return rows[: self.limit] if self.limit else rows

    def load(self) -> Splits:
        found = {
            name: regime for name, regime in ACRE_TESTS.items() if (self.dir / regime / "test.json").is_file()
        }
        if not found:
            raise FileNotFoundError(f"data.dir={str(self.dir)!r}: no IID, Comp or Sys test.json below it")
        missing = [f"{name} ({self.dir / regime / 'test.json'})" for name, regime in ACRE_TESTS.items()
                   if name not in found]  # fmt: skip
        if missing:  # named and counted: a run without a split must not pass for one with it
            log.warning("%d ACRE test split(s) missing, not tested: %s", len(missing), "; ".join(missing))
        test = {name: self._read(regime, "test") for name, regime in found.items()}
        train = self._read(self.train_regime, "train")
        if (self.dir / self.train_regime / "val.json").is_file():
            return Splits(train=train, val={"iid": self._read(self.train_regime, "val")}, test=test)
        name = next(iter(test))
        return Splits(train=train, val={name: test[name]}, test=test, val_is_test=True)


class EvalsSource:
    """OpenAI-evals JSONL files (catlit.data.evals), one source id per file:
    `train: {source: path}`, `val` / `test: {split: {source: path}}` (or `{split: path}`, whose
    source is the file's stem). Without val files the first test split validates."""

    def __init__(
        self,
        train: dict[str, str],
        test: dict,
        val: dict | None = None,
        task: str = "exact",
        limit: int | None = None,
    ):
        if not train or not test:
            raise ValueError(
                "data.train ({source: path}) and data.test ({split: {source: path}}) are required"
            )
        self.task, self.limit = task, limit
        self.train, self.val, self.test = dict(train), dict(val or {}), dict(test)

    def _read(self, files) -> list:
        if isinstance(files, str):
            files = {Path(files).stem: files}
        return [ex for source, path in files.items() for ex in read_evals(path, source, self.limit)]

    def load(self) -> Splits:
        test = {split: self._read(files) for split, files in self.test.items() if files}
        val = {split: self._read(files) for split, files in self.val.items() if files}
        if not val:
            name = next(iter(test))
            log.info("no data.val files: validating on test split %r", name)
            return Splits(train=self._read(self.train), val={name: test[name]}, test=test, val_is_test=True)
        return Splits(train=self._read(self.train), val=val, test=test)


class JsonlSource:
    """Released-format JSONL files: one train file and named val / test files.

    Where a dataset ships no val (or test) file, `val_fraction` (`test_fraction`) holds out that share
    of the training file, seeded by `split_seed`, as the `iid` split.
    """

    def __init__(
        self,
        train: str,
        val: dict[str, str] | None = None,
        test: dict[str, str] | None = None,
        task: str = "exact",
        limit: int | None = None,
        bad_annotations: str = "raise",
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split_seed: int = 0,
    ):
        if not test and not test_fraction:
            raise ValueError(
                "data.test must name at least one test split ({iid: path}) or set data.test_fraction"
            )
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"data.{name} must be in [0, 1), got {fraction}")
        self.task, self.limit, self.bad_annotations = task, limit, bad_annotations
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.train_path = Path(train)
        # a null path removes a split (`data.test.ood=null`, or a preset that has no OOD set)
        self.val_paths = {k: Path(v) for k, v in (val or {}).items() if v is not None}
        self.test_paths = {k: Path(v) for k, v in (test or {}).items() if v is not None}
        if not self.test_paths and not test_fraction:
            raise ValueError("data.test has no split left and data.test_fraction is 0")

    def _read(self, path: Path):
        return read_jsonl(path, self.limit, self.bad_annotations)

    def load(self) -> Splits:
        train = self._read(self.train_path)
        order = list(range(len(train)))
        random.Random(self.split_seed).shuffle(order)
        n_test, n_val = int(len(train) * self.test_fraction), int(len(train) * self.val_fraction)
        held_test, held_val = sorted(order[:n_test]), sorted(order[n_test : n_test + n_val])
        held = set(held_test) | set(held_val)
        test = {k: self._read(p) for k, p in self.test_paths.items()}
        val = {k: self._read(p) for k, p in self.val_paths.items()}
        if n_test:
            test = {"iid": [train[i] for i in held_test], **test}
        if n_val:
            val = {"iid": [train[i] for i in held_val], **val}
        train = [ex for i, ex in enumerate(train) if i not in held]
        if not val:  # validate on the first test split rather than carve rows out of train
            name = next(iter(test))
            log.info("no data.val files or val_fraction: validating on test split %r", name)
            return Splits(train=train, val={name: test[name]}, test=test, val_is_test=True)
        return Splits(train=train, val=val, test=test)


# ---- DataModule factories: what `conf/data/*.yaml` instantiate, so that source options
# (data.preset, data.params, data.train) and loader options (data.batch_size) sit side by side. ---


def _datamodule(source_cls, options: dict):
    from catlit.data.datamodule import TaskDataModule

    accepted = inspect.signature(source_cls).parameters
    source = source_cls(**{k: v for k, v in options.items() if k in accepted})
    return TaskDataModule(source, **{k: v for k, v in options.items() if k not in accepted})


def stg_datamodule(**options):
    return _datamodule(STGSource, options)


def stg_h_datamodule(**options):
    return _datamodule(STGHSource, options)


def jsonl_datamodule(**options):
    return _datamodule(JsonlSource, options)


def acre_datamodule(**options):
    return _datamodule(ACRESource, options)


def acre_files_datamodule(**options):
    return _datamodule(ACREFilesSource, options)


def evals_datamodule(**options):
    return _datamodule(EvalsSource, options)
