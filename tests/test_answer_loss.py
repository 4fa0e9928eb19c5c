"""The answer-only loss projects only the positions that predict answer tokens, and equals the
model's own `labels=` loss, values and gradients, on every family of the architecture table."""

from __future__ import annotations

import pytest
import torch

from catlit.data.encoding import IGNORE_INDEX
from catlit.methods.answer_loss import answer_forward, projected_only_at
from tests.helpers.models import FAMILIES, tiny_model


def batch_with_answers() -> dict:
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0  # right padding, as the training view pads
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 6:9], labels[1, 10:], labels[2, 3:5] = ids[0, 6:9], ids[1, 10:], ids[2, 3:5]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_answer_only_loss_is_the_models_own_loss_and_gradient(family):
    batch = batch_with_answers()
    model = tiny_model(family).requires_grad_(True)
    reference = model(**batch).loss
    (expected,) = torch.autograd.grad(reference, model.get_input_embeddings().weight)
    loss, out = answer_forward(model, batch)
    (grad,) = torch.autograd.grad(loss, model.get_input_embeddings().weight)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert out.logits.shape == (7, model.config.vocab_size)  # 3 + 2 + 2 answer tokens, not 3 x 12
    assert model(input_ids=batch["input_ids"]).logits.shape == (3, 12, model.config.vocab_size)  # hook gone


def test_the_projection_hook_is_removed_after_an_error():
    model = tiny_model("llama")
    everywhere = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="boom"), projected_only_at(model, everywhere):
        raise RuntimeError("boom")
    assert not model.get_output_embeddings()._forward_pre_hooks
