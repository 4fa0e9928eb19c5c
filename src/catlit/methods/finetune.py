"""The reference every method is measured against: plain answer-only fine-tuning (`method=baseline`),
one LoRA adapter of the `adapter` config group's shape (`method=lora`), and a LoRA whose rank trains
as many parameters as another method it is handed (`method=lora_matched`: the capacity-matched
reference for ICLM; Hydra builds the matched method from `method.match`)."""

from __future__ import annotations

from dataclasses import replace

from catlit.methods.base import Method
from catlit.models.lora import adapter_config, apply_adapter, parameters_per_rank

REFERENCE_METHOD = "baseline"  # what report.py measures "gap closed" against unless told otherwise


class Baseline(Method):
    """Plain answer-only fine-tuning; with `adapter` (the `adapter` config group: r, alpha, dropout,
    target_modules) it trains one LoRA adapter of that shape on the frozen model (method=lora: the
    single-adapter reference for ICLM's modules)."""

    name = REFERENCE_METHOD

    def __init__(self, name: str | None = None, adapter: dict | None = None, match: Method | None = None):
        super().__init__(name)
        self.adapter = adapter_config(adapter) if adapter else None
        if match is not None and not isinstance(match, Method):
            raise TypeError(
                f"method.match must build a method (a `_target_` node), got {type(match).__name__}"
            )
        self.match = match  # the method whose trained-parameter count the rank matches
        self.rank: int | None = None

    @property
    def builds_adapters(self) -> bool:
        return self.adapter is not None

    def build(self, model, tokenizer=None):
        if not self.adapter:
            return model
        adapter = self.adapter
        if self.match is not None:  # capacity-matched: the rank that trains as many parameters
            target = self.match.trainable_parameters(model)
            adapter = replace(adapter, r=max(1, round(target / parameters_per_rank(model, adapter))))
        self.rank = adapter.r
        return apply_adapter(model, adapter, owner=self.name)

    def summary(self) -> dict[str, float]:
        return {"train/lora_rank": float(self.rank)} if self.rank is not None else {}
