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


class Collator:
    """Builds training batches; with `with_prompts` also the generation view and target strings."""

    def __init__(self, pad_id: int, with_mask: bool = True, with_prompts: bool = False):
        self.pad_id, self.with_mask, self.with_prompts = pad_id, with_mask, with_prompts

    def __call__(self, items: list[tuple[int, Encoded, str]]) -> dict:
        index, rows, targets = zip(*items)
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
        if self.with_mask:
            batch["causal_mask"] = causal_mask(list(rows), length)
        if self.with_prompts:
            plen = max(r.prompt_len for r in rows)
            prompt = torch.full((len(rows), plen), self.pad_id, dtype=torch.long)
            pmask = torch.zeros((len(rows), plen), dtype=torch.long)
            for b, r in enumerate(rows):  # left padding: generation continues every row at the end
                prompt[b, plen - r.prompt_len :] = torch.tensor(r.input_ids[: r.prompt_len])
                pmask[b, plen - r.prompt_len :] = 1
            batch.update(prompt_ids=prompt, prompt_mask=pmask, targets=list(targets))
        return batch
