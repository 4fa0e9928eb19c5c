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
`save_pretrained`, `trainable_parameters`), the run-summary contract every method declares
(`catlit.summaries.RunSummary`: `summary`, `summary_lines`), and declared `Capabilities`: what the
pipeline may ask of it, and the rules its settings must meet (checked by `check_settings` when it is
built and by train.py before anything runs: one table, one place). `training/`, `data/` and
`report.py` read these declarations and never name a method. This module is the contract only: the
plain and LoRA fine-tuning reference is `catlit.methods.finetune`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from catlit.errors import check_values
from catlit.methods.answer_loss import answer_forward
from catlit.summaries import RunSummary


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


class Method(RunSummary):
    name = "method"
    capabilities = Capabilities()

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    @classmethod
    def check_settings(cls, **values) -> None:
        """`values` against the rules the class declares (`capabilities.config_rules`); a ConfigError
        names the first that fails, as train.py's check of the same rules does."""
        check_values(values, cls.capabilities.config_rules, prefix="method.")

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
        loss, out = answer_forward(model, batch)
        return MethodOutput(loss=loss, logits=out.logits)

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

    def save_pretrained(self, directory, model) -> None:
        """Write what the method adds to a saved model folder (the model itself is already there)."""

    def trainable_parameters(self, model) -> int:
        """How many parameters the method would train on `model`, before `build` (what a
        capacity-matched reference sizes itself to)."""
        raise NotImplementedError(f"method {self.name} does not say what it would train before build")
