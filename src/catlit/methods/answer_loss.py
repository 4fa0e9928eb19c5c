"""The answer-only cross-entropy without [batch, length, vocabulary] logits.

The training view marks the answer tokens in `labels`; only the positions that predict them need the
vocabulary projection. For the length of one forward, a pre-hook on the model's output embeddings
hands the projection those positions' hidden states alone, so the logits are [N, V] (N answer
tokens) instead of [B, T, V] — at SmolLM2's 49,152-token vocabulary an evaluation batch of 128 rows x
150 tokens is 3.8 GB per float32 copy of full logits, and the loss makes several. Whatever the model
does to its logits after the projection (soft-capping, scaling) still applies: it is elementwise.
The loss is the mean over answer tokens, as the model's own `labels=` loss computes it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from catlit.data.encoding import IGNORE_INDEX


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the positions whose next token is an answer token."""
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions


def next_tokens(labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[N] the token each selected position predicts."""
    return labels[:, 1:][positions[:, :-1]]


@contextlib.contextmanager
def projected_only_at(model, positions: torch.Tensor):
    """The output embeddings see hidden[positions] ([N, D]) instead of [B, T, D] inside the block."""
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0][positions], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def answer_forward(model, batch: dict, **kwargs):
    """(mean CE over the answer tokens, the model's output with logits [N, V] in row-major order)."""
    predicting = answer_positions(batch["labels"])
    with projected_only_at(model, predicting):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    loss = F.cross_entropy(out.logits.float(), next_tokens(batch["labels"], predicting))
    return loss, out
