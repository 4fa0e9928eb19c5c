"""The LightningDataModule: a source's splits, encoded for one tokenizer, as dataloaders."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from catlit.data.collate import Collator, check_fields
from catlit.data.encoding import IGNORE_INDEX, Encoded, ExampleEncoder
from catlit.data.example import Example
from catlit.data.generated import Splits
from catlit.data.prompts import check_format, formatter

log = logging.getLogger(__name__)


class EncodedSplit(Dataset):
    """Encoded rows and their examples; an item is (index, Encoded, target, source id)."""

    def __init__(
        self, examples: list[Example], encoded: list[Encoded], source_ids: dict[str, int] | None = None
    ):
        self.examples, self.encoded = examples, encoded
        ids = source_ids or {}
        self.sources = [ids.get(ex.meta.get("source"), -1) for ex in examples]

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> tuple[int, Encoded, str, int]:
        return i, self.encoded[i], self.examples[i].target, self.sources[i]


class EpochSeededSampler(RandomSampler):
    """A shuffle that is a function of (seed, epoch) only, so a resumed run sees the same order.

    Lightning calls `set_epoch` before every training epoch (with the restored epoch on resume); it
    stays a RandomSampler so that under DDP Lightning swaps in its own seeded DistributedSampler.
    """

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class TaskDataModule(L.LightningDataModule):
    """Train, named val and named test splits (`iid` and `ood` for the STG sources; `iid`,
    `compositional`, `systematic` for ACRE), for every method.

    The tokenizer arrives after construction (`set_tokenizer`) because the embedded default model
    trains its tokenizer on this module's own training text. `fields` are what the method asks the
    training batches for beyond the tokens, `eval_fields` what it asks of validation and test batches
    (see `catlit.data.collate.BATCH_FIELDS`); evaluation batches always carry the generation prompts.
    """

    def __init__(
        self,
        source,
        name: str = "data",
        max_length: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        max_new_tokens: int | None = None,
        fields=("causal_mask",),
        eval_fields=(),
        too_long: str = "raise",
        shuffle_seed: int = 0,
        group_by: str | None = None,
        prompt_format: str = "raw",
    ):
        super().__init__()
        self.prompt_format = check_format(prompt_format)  # raw | chat (catlit.data.prompts)
        self.source, self.name, self.max_length = source, name, max_length
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.fields, self.eval_fields = check_fields(fields), check_fields(eval_fields)
        self._max_new_tokens, self.too_long = max_new_tokens, too_long
        self.shuffle_seed = shuffle_seed  # train.py passes the run's seed
        self.group_by = group_by  # an example meta key: test accuracy is also reported per its value
        self.task = getattr(source, "task", "exact")
        self.tokenizer = None
        self._splits: Splits | None = None
        self.train_set: EncodedSplit | None = None
        self.val_sets: dict[str, EncodedSplit] = {}
        self.test_sets: dict[str, EncodedSplit] = {}

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = self.source.load()
            log.info("data splits: %s", self._splits.sizes())
        return self._splits

    def corpus(self) -> list[str]:
        """Text a tokenizer may be trained on: training rows only, so no test text leaks in."""
        return [ex.text for ex in self.splits.train]

    def set_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.train_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("TaskDataModule.setup() before set_tokenizer(): build the model first")
        splits = self.splits
        self.train_set, train_encoder = self._encode(splits.train, "train", training=True)
        self.train_coverage = train_encoder.coverage
        c = train_encoder.coverage.counts
        if "causal_mask" in self.fields and c["examples_annotated"] < len(self.train_set):
            log.warning(
                "[train] %d of %d row(s) have no `important` annotation: no Re-Attention loss on them",
                len(self.train_set) - c["examples_annotated"],
                len(self.train_set),
            )
        if not len(self.train_set):
            raise ValueError("no training rows left after encoding (see the warnings above)")
        self.val_sets = {k: self._encode(v, f"val/{k}")[0] for k, v in splits.val.items()}
        self.test_sets = {k: self._encode(v, f"test/{k}")[0] for k, v in splits.test.items()}

    def _encode(self, examples: list[Example], name: str, training: bool = False):
        encoder = ExampleEncoder(self.tokenizer, self.max_length, too_long=self.too_long, training=training)
        shape = formatter(self.prompt_format, self.tokenizer)
        pairs = [(e, enc) for e in examples if (enc := encoder.encode(shape(e))) is not None]
        encoder.log_coverage(name) if training else encoder.log_drops(name)
        examples = [e for e, _ in pairs]
        return EncodedSplit(examples, [enc for _, enc in pairs], self.source_ids), encoder

    @property
    def max_new_tokens(self) -> int:
        if self._max_new_tokens:
            return self._max_new_tokens
        self.setup()
        longest = max(sum(t != IGNORE_INDEX for t in e.labels) for e in self.train_set.encoded)
        return longest + 2

    @property
    def source_names(self) -> list[str]:
        """The training rows' `meta["source"]` values (an encoding, a domain, a file), sorted."""
        return sorted({str(ex.meta["source"]) for ex in self.splits.train if "source" in ex.meta})

    @property
    def source_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.source_names)}

    @property
    def val_names(self) -> list[str]:
        return list(self.splits.val)

    @property
    def test_names(self) -> list[str]:
        return list(self.splits.test)

    def _loader(self, dataset, batch_size: int, shuffle: bool, collator: Collator) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochSeededSampler(dataset, self.shuffle_seed) if shuffle else None,
            # its own generator: starting an iterator then draws nothing from the global random
            # stream, which a resumed run restores for dropout
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            num_workers=self.num_workers,
            collate_fn=collator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        collator = Collator(self.tokenizer.pad_token_id, self.fields)
        return self._loader(self.train_set, self.batch_size, True, collator)

    def _eval_loaders(self, sets: dict[str, EncodedSplit]) -> list[DataLoader]:
        collator = Collator(self.tokenizer.pad_token_id, self.eval_fields, with_prompts=True)
        return [self._loader(ds, self.eval_batch_size, False, collator) for ds in sets.values()]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)


def group_accuracy(predictions: dict[str, list[dict]], test_sets: dict[str, EncodedSplit], key: str) -> dict:
    """`test/<split>/by_<key>/<value>/acc`: accuracy over the test examples whose `meta[key]` is value."""
    out = {}
    for split, rows in predictions.items():
        groups: dict[str, list[bool]] = {}
        for row in rows:
            value = test_sets[split].examples[row["index"]].meta.get(key)
            if value is not None:
                groups.setdefault(str(value), []).append(bool(row["correct"]))
        for value, correct in sorted(groups.items()):
            out[f"test/{split}/by_{key}/{value}/acc"] = sum(correct) / len(correct)
    return out
