"""Planted circuits: make chosen heads the main (or only) path of a change, to validate a tracer.

`plant_heads` edits a model in place; `orient` orders each pair's candidates so the full patch has a
positive effect. Used by the tests and the tracing benchmark; useful to check a tracer on a new
architecture before trusting it on a real model.
"""

from __future__ import annotations

import torch

from catlit.models.architectures import Layout


def plant_heads(
    model, planted: set[tuple[int, int]], scale: float = 20.0, readout: float = 10.0, others: float = 0.0
):
    """Make `planted` heads the main path of a change: every other head's output slice is multiplied
    by `others` (0: the planted heads are the only path), the planted ones by `scale`, and the
    unembedding by `readout` so the effect is large."""
    layout = Layout(model)
    with torch.no_grad():
        for layer in range(layout.n_layers):
            for head in range(layout.n_heads):
                weight = layout.head_output_weight(layer, head)
                weight.mul_(scale if (layer, head) in planted else others)
        model.get_output_embeddings().weight.mul_(readout)


def orient(tracer) -> None:
    """Order each pair's candidates so that the full patch raises their odds (a positive effect)."""
    indices = list(range(len(tracer.encoded)))
    full = tracer.space.full(1.0, device=tracer.device)
    for batch, cache in tracer.prepare(indices):
        delta = tracer.delta(batch, full, cache)
        for i, d in zip(batch.pair_index.tolist(), delta.tolist()):
            if d < 0:
                pair = tracer.encoded[i]
                pair.scores = [(s, pos, tok, 1 - c) for s, pos, tok, c in pair.scores]
    tracer.forget_base_scores()  # they were read with the old candidate order
