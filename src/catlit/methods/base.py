"""The Method core: what a training objective may change around the one LightningModule.

The LightningModule (`catlit.training.module.TaskModule`) is the same for every method:
loss = the forward's loss + Σ the method's terms. A method has a small core,

  build(model, tokenizer)            once, before the Trainer exists: returns the model to train
                                     (e.g. with adapters). A method that is also an `nn.Module` owns
                                     parameters (a router, a head): they reach the optimizer, DDP and
                                     checkpoints as the LightningModule's `method.*` weights;
  forward(model, batch, stage)       one pass -> `MethodOutput` (the answer-only CE as `loss`, and in
                                     `parts` whatever `losses` needs of this very pass);
  losses(output, batch, progress, epoch) -> (terms added to the loss, scalars to log);
  state() / load_state(state)        what it learned outside any module (checkpointed);

optional members with do-nothing defaults (`hooks`, `end_batch`, `generate`, `epoch_metrics`,
`summary`, `summary_lines`, `save_pretrained`), and declared `Capabilities`: what the pipeline may ask
of it. `training/`, `data/` and `report.py` read these declarations and never name a method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from catlit.models.lora import adapter_config, apply_adapter


@dataclass(frozen=True)
class Capabilities:
    batch_fields: frozenset[str] = frozenset()  # asked of training batches (catlit.data.collate.BATCH_FIELDS)
    eval_batch_fields: frozenset[str] = frozenset()  # asked of validation and test batches
    progress_bar: tuple[str, ...] = ()  # logged scalars (as `losses` names them) shown in the progress bar
    headline: tuple[str, ...] = ()  # its config keys (below `method.`) every report label shows
    attention_probe: bool = True  # predictions come from one standard forward of the model
    label_names: Mapping[str, str] = field(default_factory=dict)  # short names of its keys in report labels
    # keys whose value names another run (a path, one per seed): reports group runs by the key being
    # set, and label them with this text
    run_reference_keys: Mapping[str, str] = field(default_factory=dict)
    # its config keys -> (test, what the value must be), checked before anything runs
    config_rules: Mapping[str, tuple[Callable[[object], bool], str]] = field(default_factory=dict)


@dataclass
class MethodOutput:
    loss: torch.Tensor  # answer-only cross-entropy
    logits: torch.Tensor | None = None
    parts: dict = field(default_factory=dict)  # what `losses` needs of this forward


class Method:
    name = "method"
    capabilities = Capabilities()

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    @classmethod
    def headline_keys(cls, config: dict) -> tuple[str, ...]:
        """The config keys (below `method.`) a report label shows for a run with this method `config`."""
        return cls.capabilities.headline

    @property
    def builds_adapters(self) -> bool:
        """The method puts its own LoRA adapters on the model in `build` (`model.lora` then stays off)."""
        return False

    # ---- the core --------------------------------------------------------------------------------
    def build(self, model, tokenizer=None):
        """Called once before the Trainer exists; returns the model to train (e.g. with adapters)."""
        return model

    def forward(self, model, batch: dict, stage: str) -> MethodOutput:
        """One pass over a batch; `stage` is "train" or "<val|test>/<split>"."""
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        return MethodOutput(loss=out.loss, logits=out.logits)

    def losses(
        self, output: MethodOutput, batch: dict, progress: float, epoch: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
        """(loss terms added to the forward's loss, scalars to log) for one training batch."""
        return {}, {}

    def state(self) -> dict:
        """What the method learned outside the model (saved in checkpoints, restored on resume)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    # ---- optional ------------------------------------------------------------------------------
    def hooks(self, model) -> contextlib.AbstractContextManager:
        """What the method attaches to the model for a fit; removed when the block exits."""
        return contextlib.nullcontext()

    def end_batch(self) -> None:
        """Called once a training batch's backward is done."""

    def generate(self, model, batch: dict, stage: str, **kwargs) -> torch.Tensor:
        """Greedy continuation of the batch's left-padded prompts (prompt tokens included)."""
        return model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], **kwargs)

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """Figures gathered over the epoch of `stage` ("train", "val", "test"), keyed as logged;
        gathering starts afresh after the call."""
        return {}

    def summary(self) -> dict[str, float]:
        """Figures for the run's metrics.json once training ends (e.g. how often a loss term acted)."""
        return {}

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        """Lines printed under the run's results table."""
        return []

    def save_pretrained(self, directory, model) -> None:
        """Write what the method adds to a saved model folder (the model itself is already there)."""


class Baseline(Method):
    """Plain answer-only fine-tuning; with `adapter` (the `adapter` config group: r, alpha, dropout,
    target_modules) it trains one LoRA adapter of that shape on the frozen model (method=lora: the
    single-adapter reference for ICLM's modules)."""

    name = "baseline"

    def __init__(self, name: str | None = None, adapter: dict | None = None, match: dict | None = None):
        super().__init__(name)
        self.adapter = adapter_config(adapter) if adapter else None
        self.match = dict(match) if match is not None else None  # ICLM settings whose size the rank matches
        self.rank: int | None = None

    @property
    def builds_adapters(self) -> bool:
        return self.adapter is not None

    def build(self, model, tokenizer=None):
        if not self.adapter:
            return model
        adapter = self.adapter
        if self.match is not None:  # capacity-matched: the rank that trains as many parameters as ICLM
            from dataclasses import replace

            from catlit.methods.iclm import IndependentCausalLM
            from catlit.models.lora import parameters_per_rank

            target = IndependentCausalLM(**self.match).trainable_parameters(model)
            adapter = replace(adapter, r=max(1, round(target / parameters_per_rank(model, adapter))))
        self.rank = adapter.r
        return apply_adapter(model, adapter, owner=self.name)

    def summary(self) -> dict[str, float]:
        return {"train/lora_rank": float(self.rank)} if self.rank is not None else {}


REFERENCE_METHOD = Baseline.name  # what report.py measures "gap closed" against unless told otherwise
