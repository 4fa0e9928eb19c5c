"""Polytropon / multi-head routing (peft's `PolyConfig`): an inventory of LoRA skills per layer, mixed
by a learned per-task allocation, the task being each example's source (ACRE: its encoding). The
routed-adapters peer of ICLM: it is told the source that ICLM's router must infer."""

from __future__ import annotations

import torch

from catlit.methods.answer_loss import answer_forward
from catlit.methods.base import Capabilities, Method, MethodOutput
from catlit.models.lora import adapter_config, refuse_second_lora_owner


class Polytropon(Method):
    name = "poly"
    capabilities = Capabilities(
        batch_fields=frozenset({"source"}),
        eval_batch_fields=frozenset({"source"}),
        headline=("n_skills",),
        attention_probe=False,  # every forward needs the task ids
    )

    def __init__(
        self,
        name: str | None = None,
        adapter: dict | None = None,
        n_tasks: int = 2,
        n_skills: int = 4,
        n_splits: int = 1,
    ):
        super().__init__(name)
        self.adapter = adapter_config(adapter)
        self.n_tasks, self.n_skills, self.n_splits = n_tasks, n_skills, n_splits

    @property
    def builds_adapters(self) -> bool:
        return True

    def build(self, model, tokenizer=None):
        from peft import PolyConfig, get_peft_model

        from catlit.models.architectures import lora_target_modules

        refuse_second_lora_owner(model, self.name)
        config = PolyConfig(
            task_type="CAUSAL_LM",
            r=self.adapter.r,
            target_modules=lora_target_modules(model, self.adapter.target_modules),
            n_tasks=self.n_tasks,
            n_skills=self.n_skills,
            n_splits=self.n_splits,
        )
        return get_peft_model(model, config)

    def _tasks(self, batch: dict) -> torch.Tensor:
        tasks = batch["source"]
        if bool((tasks < 0).any()) or bool((tasks >= self.n_tasks).any()):
            raise ValueError(
                f"method={self.name}: every example needs a source id in [0, method.n_tasks={self.n_tasks}) "
                "(the data's meta['source'])"
            )
        return tasks

    def forward(self, model, batch: dict, stage: str) -> MethodOutput:
        loss, out = answer_forward(model, batch, task_ids=self._tasks(batch))
        return MethodOutput(loss=loss, logits=out.logits)

    def generate(self, model, batch: dict, stage: str, **kwargs) -> torch.Tensor:
        return model.generate(
            input_ids=batch["prompt_ids"],
            attention_mask=batch["prompt_mask"],
            task_ids=self._tasks(batch),
            **kwargs,
        )
