"""Batching: right padding for the training view, left-padded prompts for generation."""

from __future__ import annotations

import torch

from catlit.data.encoding import IGNORE_INDEX, Encoded


def causal_mask(rows: list[Encoded], length: int) -> torch.Tensor:
    """Dense [B, T, T] bool mask from the per-example blocks (rows predict effects, cols are causes)."""
    mask = torch.zeros(len(rows), length, length, dtype=torch.bool)
    for b, row in enumerate(rows):
        for r0, r1, c0, c1 in row.blocks:
            mask[b, r0:r1, c0:c1] = True
    return mask


# what a method may ask a batch for beyond input_ids / attention_mask / labels / index
BATCH_FIELDS = {
    "causal_mask": "[B, T, T] bool: rows predicting an effect x its cause tokens",
    "source": "[B] long: the example's source id (data module's source_names; -1 unknown)",
    "prompt_positions": "[B, T] bool: the prompt's tokens in the training view",
}


def check_fields(fields, owner: str = "method") -> frozenset[str]:
    unknown = sorted(set(fields) - set(BATCH_FIELDS))
    if unknown:
        raise ValueError(
            f"{owner} asks the batch for unknown field(s) {unknown}; known: {sorted(BATCH_FIELDS)}"
        )
    return frozenset(fields)


class Collator:
    """Builds training batches with the extra `fields` asked for (see BATCH_FIELDS); with
    `with_prompts` also the generation view and target strings.

    Items are (index, Encoded, target) or (index, Encoded, target, source id)."""

    def __init__(self, pad_id: int, fields=("causal_mask",), with_prompts: bool = False):
        self.pad_id, self.fields, self.with_prompts = pad_id, check_fields(fields, "Collator"), with_prompts

    def __call__(self, items: list[tuple]) -> dict:
        index, rows, targets = (list(x) for x in zip(*(item[:3] for item in items)))
        length = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(rows), length), dtype=torch.long)
        for b, r in enumerate(rows):  # right padding keeps pad columns out of every visible row
            n = len(r.input_ids)
            ids[b, :n] = torch.tensor(r.input_ids)
            labels[b, :n] = torch.tensor(r.labels)
            attn[b, :n] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": attn,
            "labels": labels,
            "index": torch.tensor(index, dtype=torch.long),
        }
        if "causal_mask" in self.fields:
            batch["causal_mask"] = causal_mask(rows, length)
        if "source" in self.fields:
            batch["source"] = torch.tensor([item[3] if len(item) > 3 else -1 for item in items])
        if "prompt_positions" in self.fields:
            positions = torch.zeros((len(rows), length), dtype=torch.bool)
            for b, r in enumerate(rows):
                positions[b, : r.prompt_len] = True
            batch["prompt_positions"] = positions
        if self.with_prompts:
            plen = max(r.prompt_len for r in rows)
            prompt = torch.full((len(rows), plen), self.pad_id, dtype=torch.long)
            pmask = torch.zeros((len(rows), plen), dtype=torch.long)
            for b, r in enumerate(rows):  # left padding: generation continues every row at the end
                prompt[b, plen - r.prompt_len :] = torch.tensor(r.input_ids[: r.prompt_len])
                pmask[b, plen - r.prompt_len :] = 1
            batch.update(prompt_ids=prompt, prompt_mask=pmask, targets=list(targets))
        return batch
