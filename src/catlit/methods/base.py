"""The method abstraction: what a training objective may change around one LightningModule.

The LightningModule is the same for every method: loss = the forward's loss + Σ method terms. A
method, in the order the run meets it:
  - `batch_fields`: what it asks the training batches for beyond the tokens (`causal_mask`,
    `source`, `prompt_positions`; see catlit.data.collate.BATCH_FIELDS);
  - `attn_implementation`: which attention the model must be built with;
  - `build(model)`: builds on the model before the Trainer exists (adapters) and returns the model
    to train. A method that is also an `nn.Module` owns parameters (a router, a head): the
    LightningModule holds it as a submodule, so they reach the optimizer, DDP and checkpoints;
  - `setup(model)`: hooks into the model once training starts;
  - `forward(model, batch, stage)` and `generate(...)`: the model's pass and greedy decoding
    (default: the model's own), with `before_forward` / `forward_kwargs` for methods that only
    need to see inside the standard pass (attention statistics);
  - `losses(...)`: terms added to the forward's loss, and scalars to log;
  - `epoch_metrics(stage)`: figures gathered over an epoch (logged once per epoch);
  - `method_state` / `load_method_state`: plain state outside any module (checkpointed);
  - `summary()`: end-of-run figures for metrics.json; `save_pretrained(dir, model)`: what the
    method adds to the saved model folder.
"""

from __future__ import annotations

import torch


class Method:
    name = "method"
    batch_fields: frozenset[str] = frozenset()
    single_pass = True  # predictions come from one standard forward of the model (attention is probed)

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    def attn_implementation(self, requested: str) -> str:
        """The attention implementation the model must be built with, given the one configured."""
        return requested

    def build(self, model, tokenizer=None):
        """Called once before the Trainer exists; returns the model to train (e.g. with adapters)."""
        return model

    def setup(self, model) -> None:
        """Called once with the (possibly peft-wrapped) model before training."""

    def before_forward(self, batch: dict, training: bool) -> None:
        """Called before every standard forward pass (training or evaluation)."""

    def forward_kwargs(self) -> dict:
        return {}

    def forward(self, model, batch: dict, stage: str):
        """One pass over a batch; `stage` is "train" or "<val|test>/<split>". Returns model outputs
        with `.loss` (answer-only CE) and `.logits`."""
        training = stage == "train"
        self.before_forward(batch, training)
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            **(self.forward_kwargs() if training else {}),
        )

    def generate(self, model, batch: dict, stage: str, **kwargs) -> torch.Tensor:
        """Greedy continuation of the batch's left-padded prompts (prompt tokens included)."""
        return model.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], **kwargs)

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """Figures gathered over the epoch of `stage` ("train", "val", "test"), keyed as logged;
        gathering starts afresh after the call."""
        return {}

    def save_pretrained(self, directory, model) -> None:
        """Write what the method adds to a saved model folder (the model itself is already there)."""

    def method_state(self) -> dict:
        """What the method learned outside the model (saved in checkpoints, restored on resume)."""
        return {}

    def load_method_state(self, state: dict) -> None:
        pass

    def summary(self) -> dict[str, float]:
        """Figures for the run's metrics.json once training ends (e.g. how often a loss term acted)."""
        return {}

    def losses(
        self, outputs, batch: dict, progress: float, epoch: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
        """Return (loss terms added to CE, scalars to log)."""
        return {}, {}


class Baseline(Method):
    """Plain answer-only fine-tuning; with `adapter` ({r, alpha, dropout, target_modules}) the method
    trains one LoRA adapter of that shape on the frozen model (method=lora: the single-adapter
    reference for ICLM's modules)."""

    name = "baseline"

    def __init__(self, name: str | None = None, adapter: dict | None = None):
        super().__init__(name)
        self.adapter = dict(adapter) if adapter else None

    def build(self, model, tokenizer=None):
        if not self.adapter:
            return model
        from catlit.models.lora import apply_lora, refuse_second_lora_owner

        refuse_second_lora_owner(model, self.name)
        return apply_lora(model, **self.adapter)
