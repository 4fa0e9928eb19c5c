"""ICLM: adapters on one shared base, the router, the losses and their gradients, save/load, decoding."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from catlit.data.encoding import IGNORE_INDEX
from catlit.methods.iclm import IndependentCausalLM, answer_positions, next_tokens, position_ids
from catlit.models.lora import active_adapter
from tests.helpers.models import tiny_llama

VOCAB = 50
NO_DROPOUT = {"dropout": 0.0}


def perturb_adapters(model, seed: int = 1) -> None:
    """LoRA's B starts at zero (every adapter = the base): give each adapter its own weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def build(**options):
    method = IndependentCausalLM(adapter=NO_DROPOUT, **options)
    model = method.build(tiny_llama())
    perturb_adapters(model)
    model.train()
    method.train()
    return method, model


def make_batch(batch: int = 6, length: int = 12, seed: int = 0) -> dict:
    """Right-padded rows: a prompt, a 2-token answer, then padding (rows shorter by b % 3)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX)
    prompt = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        n = length - b % 3
        mask[b, n:] = 0
        ids[b, n:] = 0
        labels[b, n - 2 : n] = ids[b, n - 2 : n]
        prompt[b, : n - 2] = True
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "prompt_positions": prompt,
        "source": torch.arange(batch) % 2,
    }


def grads(params) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def adapter_params(model, name: str) -> list:
    return [p for n, p in model.named_parameters() if f".{name}." in n]


def zero_grads(method, model) -> None:
    for p in [*model.parameters(), *method.parameters()]:
        p.grad = None


def force_route(method, k: int) -> None:
    """Every input to domain k: the other codewords move far away."""
    with torch.no_grad():
        method.router.codebook.weight.fill_(1e3)
        method.router.codebook.weight[k].zero_()


def split_routes(method, model, batch: dict) -> None:
    """Codewords at the mean latents of the first two inputs, so both domain modules get inputs."""
    with torch.no_grad():
        mask = method._route_mask(batch, training=False)
        z, rows = method.router.latents(
            method._hidden(model, "router", batch["input_ids"], batch["attention_mask"]), mask
        )
        means = torch.zeros(mask.shape[0], z.shape[1]).index_add(0, rows, z) / mask.sum(-1, keepdim=True)
        method.router.codebook.weight.copy_(means[:2])


# ---- shapes, losses, gradients -------------------------------------------------------------------
def test_iclm_forward_shapes_and_five_finite_loss_terms():
    method, model = build()
    batch = make_batch()
    out = method.forward(model, batch, "train")
    assert out.logits.shape == (12, VOCAB)  # heads run at the 2 answer positions of each of 6 rows
    assert out.route.weights.shape == (6, 2) and out.route.choice.shape == (6,)
    terms, logs = method.losses(out, batch, 0.0, 0)
    assert set(terms) == {"route", "mi", "inv", "dom"}
    for value in [out.loss, *terms.values()]:
        assert value.dim() == 0 and torch.isfinite(value)
    assert {"vq", "ce_inv", "ce_dom", "mi_0", "mi_1"} <= set(logs)


def test_iclm_frozen_base_gets_no_gradient_and_every_adapter_stays_trainable():
    method, model = build()
    batch = make_batch()
    out = method.forward(model, batch, "train")
    terms, _ = method.losses(out, batch, 0.0, 0)
    (out.loss + sum(terms.values())).backward()
    for name, param in model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad, name
        else:
            assert not param.requires_grad and param.grad is None, name
    for adapter in ("router", "invariant", "domain_0", "domain_1"):
        assert grads(adapter_params(model, adapter)) > 0, adapter


def test_router_gets_gradient_only_from_the_vq_term():
    method, model = build()
    batch = make_batch()
    out = method.forward(model, batch, "train")
    terms, _ = method.losses(out, batch, 0.0, 0)
    router = [*method.router.projector.parameters(), *method.router.norm.parameters()]
    router_adapter = adapter_params(model, "router")
    (out.loss + terms["mi"] + terms["inv"] + terms["dom"]).backward(retain_graph=True)
    assert grads(router) == 0 and grads(router_adapter) == 0 and grads([method.router.codebook.weight]) == 0
    terms["route"].backward()
    assert grads(router) > 0 and grads(router_adapter) > 0 and grads([method.router.codebook.weight]) > 0


@pytest.mark.parametrize("lambda_mi", [0.0, 0.01])
def test_iclm_unselected_domain_learns_only_from_mutual_information(lambda_mi):
    method, model = build(lambda_mi=lambda_mi)
    force_route(method, 0)
    batch = make_batch()
    out = method.forward(model, batch, "train")
    assert out.route.choice.eq(0).all()
    terms, _ = method.losses(out, batch, 0.0, 0)
    (out.loss + terms["inv"] + terms["dom"] + terms["route"]).backward(retain_graph=True)
    assert grads(adapter_params(model, "domain_1")) == 0  # no task gradient
    assert grads(adapter_params(model, "domain_0")) > 0 and grads(adapter_params(model, "invariant")) > 0
    terms["mi"].backward()
    unselected = grads(adapter_params(model, "domain_1"))
    assert (unselected > 0) == (lambda_mi > 0)


# ---- routing -------------------------------------------------------------------------------------
def test_router_choice_is_the_codeword_nearest_the_mean_latent():
    method, model = build()
    method.eval()  # BatchNorm on running statistics: latents are a function of each input alone
    batch = make_batch(batch=12)
    split_routes(method, model, batch)
    mask = method._route_mask(batch, training=True)
    route = method.route(model, batch["input_ids"], batch["attention_mask"], mask)
    hidden = method._hidden(model, "router", batch["input_ids"], batch["attention_mask"])
    z, rows = method.router.latents(hidden, mask)
    mean = torch.zeros(12, z.shape[1]).index_add(0, rows, z) / mask.sum(-1, keepdim=True)
    nearest = torch.cdist(mean, method.router.codebook.weight).argmin(-1)
    assert torch.equal(route.choice, nearest)
    assert torch.equal(route.weights, torch.nn.functional.one_hot(nearest, 2).float())


def test_router_masks_padding_and_answer_unless_asked_for_the_released_behaviour():
    batch = make_batch()
    prompt_only = IndependentCausalLM()._route_mask(batch, training=True)
    assert torch.equal(prompt_only, batch["prompt_positions"])
    sequence = IndependentCausalLM(route_on="sequence")
    assert torch.equal(sequence._route_mask(batch, training=True), batch["attention_mask"].bool())
    assert torch.equal(sequence._route_mask(batch, training=False), batch["prompt_positions"])
    padded = IndependentCausalLM(route_on="sequence", mask_padding=False)._route_mask(batch, training=True)
    assert padded.all()


def test_iclm_one_hot_weights_make_h_dom_the_selected_module_state():
    method, model = build()
    method.eval()
    batch = make_batch(batch=12)
    split_routes(method, model, batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    route = method.route(model, ids, mask, method._route_mask(batch, False))
    assert len(set(route.choice.tolist())) == 2  # both modules chosen somewhere
    sel = answer_positions(batch["labels"])
    _, h_dom, logits_dom = method._domains(model, ids, mask, sel, route)
    row_of = sel.nonzero()[:, 0]
    for b, k in enumerate(route.choice.tolist()):
        h, logits = method._run(model, f"domain_{k}", ids[b : b + 1], mask[b : b + 1], sel[b : b + 1])
        torch.testing.assert_close(h_dom[b], h[0])
        torch.testing.assert_close(logits_dom[row_of == b], logits)


def test_iclm_sparse_mode_computes_what_dense_mode_computes():
    dense, model = build()
    dense.eval()
    batch = make_batch(batch=12)
    split_routes(dense, model, batch)
    sparse = IndependentCausalLM(adapter=NO_DROPOUT, mode="sparse")
    sparse.router, sparse.norm, sparse.head = dense.router, dense.norm, dense.head
    sparse.head_type = dense.head_type  # as build() resolved it
    sparse._adapter_weights = dense._adapter_weights
    sparse.eval()
    a = dense.forward(model, batch, "val/iid")
    b = sparse.forward(model, batch, "val/iid")
    assert len(set(a.route.choice.tolist())) == 2
    torch.testing.assert_close(a.logits, b.logits)


def test_iclm_no_invariant_reproduces_the_routed_module_logits():
    method, model = build(aggregation="no_invariant")
    assert "invariant" not in method.adapter_names
    method.eval()
    batch = make_batch(batch=12)
    split_routes(method, model, batch)
    out = method.forward(model, batch, "test/iid")
    sel = answer_positions(batch["labels"])
    row_of = sel.nonzero()[:, 0]
    assert len(set(out.route.choice.tolist())) == 2
    for b, k in enumerate(out.route.choice.tolist()):
        rows = slice(b, b + 1)
        _, logits = method._run(
            model, f"domain_{k}", batch["input_ids"][rows], batch["attention_mask"][rows], sel[rows]
        )
        torch.testing.assert_close(out.logits[row_of == b], logits)


def test_iclm_per_module_evaluation_uses_that_module_alone():
    method, model = build(eval_module="invariant")
    method.eval()
    batch = make_batch()
    out = method.forward(model, batch, "test/iid")
    sel = answer_positions(batch["labels"])
    _, own = method._run(model, "invariant", batch["input_ids"], batch["attention_mask"], sel)
    torch.testing.assert_close(out.logits, own)
    torch.testing.assert_close(
        out.loss, torch.nn.functional.cross_entropy(own, next_tokens(batch["labels"], sel))
    )
    with pytest.raises(ValueError, match="eval_module"):
        IndependentCausalLM(eval_module="domain_7")


@pytest.mark.parametrize(
    "aggregation, head",
    [("norm_hidden_states", "full"), ("norm_hidden_states", "projected"), ("hidden_states", "full"),
     ("logits", "full"), ("probas", "full")],
)  # fmt: skip
def test_iclm_aggregations_train(aggregation, head):
    method, model = build(aggregation=aggregation, head=head)
    batch = make_batch()
    out = method.forward(model, batch, "train")
    terms, _ = method.losses(out, batch, 0.0, 0)
    (out.loss + sum(terms.values())).backward()
    assert torch.isfinite(out.loss)
    assert grads(adapter_params(model, "invariant")) > 0
    if aggregation in ("norm_hidden_states", "hidden_states"):
        assert method.head.weight.grad is not None and grads([method.head.weight]) > 0
        assert method.head.out_features == (VOCAB if head == "full" else 32)
    else:
        assert method.head is None
    assert model.get_base_model().get_output_embeddings().weight.grad is None  # the base head is frozen


# ---- one shared base == the released design's copies --------------------------------------------
def test_iclm_shared_base_matches_one_model_copy_per_adapter():
    method, shared = build()
    shared.eval()
    batch = make_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    state = shared.state_dict()
    for name in method.adapter_names:
        copy_model = get_peft_model(
            copy.deepcopy(tiny_llama()),
            LoraConfig(
                r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
            ),
        )
        own = {k.replace(f".{name}.", ".default."): v for k, v in state.items() if f".{name}." in k}
        missing = copy_model.load_state_dict(own, strict=False)
        assert not [k for k in missing.missing_keys if "lora_" in k]
        copy_model.eval()
        expected = copy_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        _, logits = method._run(shared, name, ids, mask, mask.bool())
        torch.testing.assert_close(logits, expected[mask.bool()])
    with active_adapter(shared, None):  # and with no adapter, the bare base
        bare = shared(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(bare, tiny_llama()(input_ids=ids, attention_mask=mask).logits)


# ---- saving, loading, decoding -------------------------------------------------------------------
def test_iclm_save_load_round_trip_gives_identical_logits_and_generations(tmp_path):
    method, model = build()
    batch = make_batch()
    for _ in range(2):  # move BatchNorm running statistics off their initial values
        method.forward(model, batch, "train")
    method.eval()
    model.eval()
    model.save_pretrained(tmp_path)
    method.save_pretrained(tmp_path, model)
    loaded, loaded_model = IndependentCausalLM.from_pretrained(tmp_path, tiny_llama())
    loaded.eval()
    loaded_model.eval()
    a = method.forward(model, batch, "test/iid")
    b = loaded.forward(loaded_model, batch, "test/iid")
    assert torch.equal(a.logits, b.logits)
    prompts = {"prompt_ids": batch["input_ids"][:, :6], "prompt_mask": torch.ones(6, 6, dtype=torch.long)}
    kwargs = {"max_new_tokens": 4, "pad_token_id": 0, "eos_token_id": 1}
    first = method.generate(model, prompts, "test/iid", **kwargs)
    assert torch.equal(first, method.generate(model, prompts, "test/iid", **kwargs))  # deterministic
    assert torch.equal(first, loaded.generate(loaded_model, prompts, "test/iid", **kwargs))


def test_iclm_generation_routes_once_on_the_prompt():
    method, model = build()
    method.eval()
    calls = []
    original = method.route

    def counted(*args):
        calls.append(args[1].shape[1])
        return original(*args)

    method.route = counted
    prompts = {
        "prompt_ids": make_batch()["input_ids"][:, :6],
        "prompt_mask": torch.ones(6, 6, dtype=torch.long),
    }
    out = method.generate(model, prompts, "test/iid", max_new_tokens=5, pad_token_id=0, eos_token_id=-1)
    assert out.shape == (6, 11)
    assert calls == [6]  # one routing decision, on the 6 prompt tokens


def test_iclm_refuses_a_model_that_already_has_lora():
    wrapped = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="model.lora.enabled=false"):
        IndependentCausalLM().build(wrapped)


# ---- the release's behaviours, each selectable, on identical inputs --------------------------------------
def test_mi_at_the_answer_tokens_own_positions_as_released():
    from catlit.data.encoding import IGNORE_INDEX
    from catlit.methods.iclm.mutual_information import mutual_information

    batch = make_batch()
    answer = batch["labels"] != IGNORE_INDEX
    for positions, at in (("predicting", answer_positions(batch["labels"])), ("answer", answer)):
        method, model = build(mi_positions=positions)
        out = method.forward(model, batch, "train")
        _, logs = method.losses(out, batch, 0.0, 0)
        rows, _, h, _ = out.parts["states"][0]
        expected = mutual_information(out.parts["h_inv"][rows][at[rows]], h[at[rows]], **method.mi)
        torch.testing.assert_close(logs["mi_0"], expected.detach())
    assert not torch.equal(answer, answer_positions(batch["labels"]))  # the two differ by one position


@pytest.mark.parametrize("padding", [False, True])
def test_the_aggregation_norm_counts_padding_only_when_asked_as_released(padding):
    method, model = build(norm_padding=padding)
    method.norm.momentum = 1.0  # running mean = this batch's mean
    batch = make_batch()
    out = method.forward(model, batch, "train")
    sel = answer_positions(batch["labels"])
    _, h_dom, _ = method._domains(model, batch["input_ids"], batch["attention_mask"], sel, out.route)
    joint = torch.cat([out.parts["h_inv"], h_dom], dim=-1).float()
    counted = (
        torch.ones_like(batch["attention_mask"], dtype=torch.bool)
        if padding
        else batch["attention_mask"].bool()
    )
    torch.testing.assert_close(method.norm.running_mean, joint[counted].mean(0), atol=1e-5, rtol=1e-4)
    assert bool((~batch["attention_mask"].bool()).any())  # there is padding to count or not


def test_norm_logits_and_shifted_probas_are_the_releases_aggregations():
    batch, sel = make_batch(), answer_positions(make_batch()["labels"])
    method, model = build(aggregation="shifted_probas")
    method.eval()
    out = method.forward(model, batch, "test/iid")
    _, inv = method._run(model, "invariant", batch["input_ids"], batch["attention_mask"], sel)
    _, _, dom = method._domains(model, batch["input_ids"], batch["attention_mask"], sel, out.route)
    expected = sum(
        (0.25 + 0.5 * lg.softmax(-1)).clamp(1e-6, 1 - 1e-6).log() + lg.logsumexp(-1, True)
        for lg in (inv, dom)
    )
    torch.testing.assert_close(out.logits, expected)
    method, model = build(aggregation="norm_logits")
    method.eval()
    with torch.no_grad():
        method.norm.running_mean.uniform_(-1, 1)
        method.norm.running_var.uniform_(0.5, 2)
    out = method.forward(model, batch, "test/iid")
    _, inv = method._run(model, "invariant", batch["input_ids"], batch["attention_mask"], sel)
    _, _, dom = method._domains(model, batch["input_ids"], batch["attention_mask"], sel, out.route)
    torch.testing.assert_close(out.logits, 0.5 * method.norm(inv) + 0.5 * method.norm(dom))


def test_a_dead_codeword_is_restarted_when_asked():
    method, model = build(restart_after=2)
    force_route(method, 0)  # codeword 1 far away: no input chooses it
    batch = make_batch()
    far = method.router.codebook.weight[1].clone()
    method.forward(model, batch, "train")
    assert torch.equal(method.router.codebook.weight[1], far) and int(method.router.restarted) == 0
    out = method.forward(model, batch, "train")  # its second idle step: moved onto an input's latent
    _, logs = method.losses(out, batch, 0.0, 0)
    assert int(method.router.restarted) == 1 and logs["codes_restarted"] == 1.0
    assert not torch.equal(method.router.codebook.weight[1], far)
    assert float(method.router.codebook.weight[1].abs().max()) < 100  # a latent now, not the far point
    assert len(set(method.forward(model, batch, "train").route.choice.tolist())) == 2  # both codes in use


def test_domains_mean_evaluation_averages_every_domain_module():
    method, model = build(eval_module="domains_mean")
    method.eval()
    batch, sel = make_batch(), answer_positions(make_batch()["labels"])
    out = method.forward(model, batch, "test/iid")
    own = [
        method._run(model, f"domain_{k}", batch["input_ids"], batch["attention_mask"], sel)[1] for k in (0, 1)
    ]
    torch.testing.assert_close(out.logits, (own[0] + own[1]) / 2)


def test_iclm_paper_is_the_released_recipe(tmp_path):
    from tests.helpers.runs import compose_cfg

    cfg = compose_cfg(tmp_path, ["experiment=iclm_paper"])
    m = cfg.method
    assert (m.route_on, m.mask_padding, m.norm_padding, m.mi_positions, m.mi_reduce) == (
        "sequence", False, True, "answer", "topk_shared",
    )  # fmt: skip
    assert (m.lambda_inv, m.lambda_dom, cfg.optimizer.lr, cfg.scheduler.name, cfg.scheduler.warmup_ratio) == (
        1.0, 1.0, 5e-4, "linear", 0.0,
    )  # fmt: skip
    assert cfg.trainer.max_epochs == 3 and cfg.callbacks.model_checkpoint is None  # the final model
    ablation = compose_cfg(tmp_path, ["experiment=iclm_paper", "method=iclm_no_invariant"]).method
    assert (ablation.lambda_route, ablation.lambda_dom) == (0.25, 0.0)


def test_a_capacity_matched_lora_trains_as_many_parameters_as_iclm():
    from catlit.methods.finetune import Baseline

    method, model = build()
    iclm = sum(p.numel() for p in [*model.parameters(), *method.parameters()] if p.requires_grad)
    matched = Baseline(name="lora_matched", adapter={"r": 8}, match=IndependentCausalLM())
    lora = matched.build(tiny_llama())
    trained = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert method.trainable_parameters(tiny_llama()) == iclm
    assert abs(trained - iclm) / iclm < 0.05 and matched.summary()["train/lora_rank"] > 8
