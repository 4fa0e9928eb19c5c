"""ICLM switches adapters inside one forward (router, invariant, each domain module); activation
checkpointing reruns each decoder layer during the backward, and that rerun must see the adapter the
forward used, not whichever was set last."""

from __future__ import annotations

import torch

from catlit.methods.iclm import IndependentCausalLM
from catlit.models.factory import enable_checkpointing
from tests.helpers.models import tiny_llama
from tests.test_iclm import NO_DROPOUT, make_batch, perturb_adapters


def gradients(checkpointing: bool, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = tiny_llama()
    if checkpointing:
        enable_checkpointing(base)
    method = IndependentCausalLM(adapter=NO_DROPOUT, **options)
    model = method.build(base)
    perturb_adapters(model)
    model.train()
    method.train()
    out = method.forward(model, make_batch(), "train")
    out.loss.backward()
    named = [*model.named_parameters(), *(("method." + n, p) for n, p in method.named_parameters())]
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


def test_checkpointing_gives_iclm_the_same_gradients_as_without_it():
    for options in ({}, {"aggregation": "no_invariant"}):
        plain, checkpointed = gradients(False, **options), gradients(True, **options)
        assert plain.keys() == checkpointed.keys()
        assert any("domain_1" in n for n in plain)  # every module's adapter is compared
        for name, grad in plain.items():
            assert torch.allclose(grad, checkpointed[name], atol=1e-5, rtol=1e-4), (options, name)
