"""Interventions at the hook points: exactness at z = 0 and z = 1, slice placement, patterns, gradients."""

from __future__ import annotations

import pytest
import torch

from catlit.hooks.points import PATTERN_TAPS, attached, pattern_attention, recorder
from catlit.models.architectures import Layout
from catlit.models.lora import apply_lora
from catlit.tracing import engine
from catlit.tracing.components import ComponentSpace, mix_pattern
from catlit.tracing.engine import Tracer
from catlit.tracing.search import SearchResult, penalty_weight
from tests.helpers.tracing import ARCHS, EVERY_ARCH, hand_pair, random_pairs, tiny_model

COMPONENTS = [
    ("heads", "head_output"),
    ("heads", "attention_pattern"),
    ("mlp", "head_output"),
    ("neurons", "head_output"),
    (("attn_blocks", "mlp_blocks"), "head_output"),
]


def tracer_for(model, kinds="heads", mode="head_output", pairs=None, **kw):
    space = ComponentSpace(Layout(model), kinds, mode)
    return Tracer(model, space, pairs or random_pairs(), pad_id=0, **kw)


def logits(model, batch, ids=None):
    ids = batch.input_ids if ids is None else ids
    return model(input_ids=ids, attention_mask=batch.attention_mask).logits


@pytest.mark.parametrize("arch", EVERY_ARCH)
@pytest.mark.parametrize(("kinds", "mode"), COMPONENTS)
def test_zero_mask_leaves_logits_unchanged(arch, kinds, mode):
    model = tiny_model(arch)
    tracer = tracer_for(model, kinds, mode)
    batch, cache = tracer.prepare(list(range(6)))[0]
    stock = logits(model, batch)
    mask = tracer.space.full(0.0, requires_grad=True)  # requires_grad: the hooks really run
    with tracer.patched(batch, mask, cache):
        patched = logits(model, batch)
    # head-output and residual points are exact; patterns are recomputed eagerly (fp32 softmax)
    atol = 1e-5 if mode == "attention_pattern" else 0.0
    torch.testing.assert_close(patched, stock, atol=atol, rtol=0.0 if atol == 0 else 1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored on exit


@pytest.mark.parametrize("arch", EVERY_ARCH)
def test_all_heads_at_one_reproduce_the_source_last_position(arch):
    model = tiny_model(arch)
    tracer = tracer_for(model)  # the change sits at position 2, the last token is unchanged
    batch, cache = tracer.prepare(list(range(6)))[0]
    with tracer.patched(batch, tracer.space.full(1.0), cache):
        patched = logits(model, batch)[:, -1]
    source = logits(model, batch, batch.source_ids)[:, -1]
    base = logits(model, batch)[:, -1]
    torch.testing.assert_close(patched, source, atol=1e-5, rtol=1e-5)
    assert (source - base).abs().max() > 1e-3  # the change matters, so the check is not vacuous


@pytest.mark.parametrize("arch", ARCHS)
def test_mixing_puts_each_head_slice_in_place(arch):
    model = tiny_model(arch)
    layout = Layout(model)
    tracer = tracer_for(model, source="zero")
    batch = tracer.batch([0, 1])
    h, w = layout.n_heads, layout.head_width
    constants = torch.arange(1.0, h + 1).repeat_interleave(w)[None, None]  # head i's slice = i + 1
    cache = {("attn.hook_z", layer): constants for layer in range(layout.n_layers)}
    fns, clean = recorder(["attn.hook_z"], layout.n_layers)
    with attached(layout, fns):
        logits(model, batch)
    for layer in range(layout.n_layers):
        for head in range(h):
            mask = tracer.space.from_indices([layer * h + head])
            ctx = tracer.patched(batch, mask, cache)
            rec_fns, seen = recorder(["attn.hook_z"], layout.n_layers)
            with ctx, attached(layout, rec_fns):  # recorded after the mix: the projection's input
                logits(model, batch)
            x = seen[("attn.hook_z", layer)].view(*batch.input_ids.shape, h, w)
            ref = clean[("attn.hook_z", layer)].view(*batch.input_ids.shape, h, w)
            torch.testing.assert_close(x[:, :, head], torch.full_like(x[:, :, head], head + 1.0))
            others = [i for i in range(h) if i != head]
            torch.testing.assert_close(x[:, :, others], ref[:, :, others])


def test_attention_pattern_stays_causal_without_a_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)

    class Module:
        pass

    out, probs = pattern_attention(Module(), q, k, v, None)
    assert torch.all(probs.triu(1) == 0)  # no query sees a later key
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    scores = (q @ kr.transpose(-1, -2)) * 8**-0.5
    ref = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    torch.testing.assert_close(probs, ref)
    torch.testing.assert_close(out, (ref @ vr).transpose(1, 2))


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_pattern_mode_without_attention_mask_is_causal(arch):
    model = tiny_model(arch)
    layout = Layout(model)
    ids = torch.randint(3, 50, (2, 7))
    later = ids.clone()
    later[:, -1] = (later[:, -1] + 1) % 47 + 3
    seen = []
    fns = {("attn.hook_pattern", 0): [lambda p: seen.append(p.shape)]}
    with attached(layout, fns):  # no attention_mask passed: the mask function may hand over None
        a = model(input_ids=ids).logits
        b = model(input_ids=later).logits
    assert seen and model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(a[:, :-1], b[:, :-1])  # changing the last token changes no earlier row
    torch.testing.assert_close(a, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ("gpt2", "llama"))
def test_attention_patterns_are_mixed_on_the_prompt_block_only(arch, monkeypatch):
    """Candidate-token rows and columns keep the base run's probabilities, whatever `positions`."""
    model = tiny_model(arch)
    pair = random_pairs(n=1, length=6)[0]
    prompt, source = pair.seqs[0][:-1], pair.source_seqs[0][:-1]
    pair.seqs, pair.source_seqs = (
        [[*prompt, 11, 12], [*prompt, 13, 14]],
        [[*source, 11, 12], [*source, 13, 14]],
    )
    n = len(prompt)
    pair.prompt_lens, pair.noised = [n, n], [[], []]
    pair.scores = [(0, n - 1, 11, 0), (0, n, 12, 0), (1, n - 1, 13, 1), (1, n, 14, 1)]
    tracers = {
        p: tracer_for(model, mode="attention_pattern", pairs=[pair], positions=p) for p in ("all", "context")
    }
    batch, cache = tracers["all"].prepare([0])[0]
    mask = tracers["all"].space.full(1.0)
    seen = []

    def spy(*args, **kwargs):  # the mixed layer-0 probabilities, as the model receives them
        out = mix_pattern(*args, **kwargs)
        seen.append(out.detach())
        return out

    monkeypatch.setattr(engine, "mix_pattern", spy)
    with tracers["all"].patched(batch, mask, cache):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    monkeypatch.undo()
    mixed, base, src = seen[0], *(cache_of(model, ids) for ids in (batch.input_ids, batch.source_ids))
    torch.testing.assert_close(mixed[:, :, :n, :n], src[:, :, :n, :n], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mixed[:, :, n:], base[:, :, n:], atol=1e-6, rtol=1e-5)  # candidate rows
    assert (src[:, :, n:] - base[:, :, n:]).abs().max() > 1e-4  # they would differ if mixed
    d_all = tracers["all"].delta(batch, mask, cache)
    d_ctx = tracers["context"].delta(batch, mask, tracers["context"].source_cache(batch))
    torch.testing.assert_close(d_all, d_ctx)


def cache_of(model, ids):
    seen = []
    with attached(Layout(model), {("attn.hook_pattern", 0): [lambda p: seen.append(p.detach())]}):
        model(input_ids=ids)
    return seen[0]


@pytest.mark.parametrize("arch", ("gpt2", "llama"))
def test_pattern_mix_gradient_matches_the_plain_expression(arch):
    model = tiny_model(arch)
    tracer = tracer_for(model, mode="attention_pattern")
    batch, cache = tracer.prepare(list(range(6)))[0]
    z = tracer.space.full(0.3, requires_grad=True)
    tracer.loss(batch, z, cache)[0].backward()
    torch.manual_seed(0)
    x, src = torch.rand(2, 4, 5, 5, dtype=torch.float64), torch.rand(2, 4, 5, 5, dtype=torch.float64)
    rows, cols = torch.rand(2, 5) > 0.3, torch.rand(2, 5) > 0.3
    zz = torch.rand(4, dtype=torch.float64, requires_grad=True)
    xx = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: mix_pattern(a, src, b, rows, cols), (xx, zz))
    assert z["heads"].grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_is_exactly_zero_for_a_head_whose_output_slice_is_zero(arch):
    model = tiny_model(arch)
    layout = Layout(model)
    with torch.no_grad():
        layout.head_output_weight(1, 2).zero_()
    tracer = tracer_for(model)
    batch, cache = tracer.prepare(list(range(6)))[0]
    z = tracer.space.full(0.5, requires_grad=True)
    loss, _ = tracer.loss(batch, z, cache)
    loss.backward()
    grad = z["heads"].grad
    assert grad[1, 2] == 0.0
    assert grad.abs().sum() > 0


def test_inverse_loss_equals_exp_of_minus_logit_difference_change():
    model = tiny_model("llama")
    odds, diff = tracer_for(model, effect="odds"), tracer_for(model, effect="logit_diff")
    mask = odds.space.full(0.7)
    b1, c1 = odds.prepare(list(range(6)))[0]
    b2, c2 = diff.prepare(list(range(6)))[0]
    e_odds = torch.expm1(odds.delta(b1, mask, c1))
    d_logit = diff.delta(b2, mask, c2)
    torch.testing.assert_close(1 / (1 + e_odds), torch.exp(-d_logit), atol=1e-5, rtol=1e-5)
    assert d_logit.abs().max() > 1e-4


def test_multi_token_candidates_score_the_geometric_mean():
    model = tiny_model("llama")
    pair = hand_pair([5, 6, 7, 8], [5, 9, 7, 8])
    # two candidates of two tokens each: one sequence per candidate
    pair.seqs = [[5, 6, 7, 8, 11, 12], [5, 6, 7, 8, 13, 14]]
    pair.source_seqs = [[5, 9, 7, 8, 11, 12], [5, 9, 7, 8, 13, 14]]
    pair.prompt_lens = [4, 4]
    pair.scores = [(0, 3, 11, 0), (0, 4, 12, 0), (1, 3, 13, 1), (1, 4, 14, 1)]
    pair.noised = [[], []]
    tracer = tracer_for(model, pairs=[pair])
    batch = tracer.batch([0])
    score = tracer.base_scores(batch)[0]
    lp = torch.log_softmax(model(input_ids=batch.input_ids).logits, -1)
    ref = (lp[0, 3, 11] + lp[0, 4, 12]) / 2 - (lp[1, 3, 13] + lp[1, 4, 14]) / 2
    torch.testing.assert_close(score, ref, atol=1e-5, rtol=1e-5)


def test_hooks_are_removed_even_when_the_forward_fails():
    model = tiny_model("llama")
    layout = Layout(model)

    def boom(x):
        raise RuntimeError("boom")

    fns = {("attn.hook_z", 0): [boom], ("hook_mlp_out", 1): [boom], ("attn.hook_pattern", 1): [boom]}
    with pytest.raises(RuntimeError, match="boom"), attached(layout, fns):
        model(input_ids=torch.tensor([[4, 5, 6]]))
    hooked = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooked
    assert len(PATTERN_TAPS) == 0 and not any(
        k.startswith("_catlit") for m in model.modules() for k in vars(m)
    )
    assert model.config._attn_implementation == "sdpa"


def test_sites_are_read_through_a_peft_wrapper():
    model = tiny_model("llama")
    plain = Layout(model)
    wrapped = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "o_proj", "down_proj"])
    layout = Layout(wrapped)
    assert (layout.n_layers, layout.n_heads, layout.head_width, layout.d_mlp) == (
        plain.n_layers,
        plain.n_heads,
        plain.head_width,
        plain.d_mlp,
    )
    assert type(layout.layers[0].attn_out).__module__.startswith("peft")
    tracer = Tracer(wrapped, ComponentSpace(layout, "heads"), random_pairs(), pad_id=0)
    batch, cache = tracer.prepare(list(range(6)))[0]
    with tracer.patched(batch, tracer.space.full(1.0), cache):
        patched = wrapped(input_ids=batch.input_ids).logits[:, -1]
    source = wrapped(input_ids=batch.source_ids).logits[:, -1]
    torch.testing.assert_close(patched, source, atol=1e-5, rtol=1e-5)


def test_unknown_architecture_is_named():
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, is_decoder=True)
    model = BertLMHeadModel(config)
    with pytest.raises(ValueError, match="model_type='bert'"):
        Layout(model)


def test_schedules_and_selectors():
    assert penalty_weight("constant", 0.05, 3) == 0.05
    assert penalty_weight("linear", 0.05, 3) == pytest.approx(0.2)
    assert penalty_weight("exp", 0.05, 3) == pytest.approx(0.4)
    assert penalty_weight("poly", 0.05, 3) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="search.schedule"):
        penalty_weight("cubic", 0.05, 1)
    result = SearchResult(z=torch.tensor([0.2, 0.9, 0.5, 0.49, 1.0]))
    assert result.threshold(0.5) == [4, 1, 2]
    assert result.top(2) == [4, 1]
    # ties in z go by the effect gradient at the final mask, else by z summed over the epochs
    tied = SearchResult(z=torch.tensor([1.0, 1.0, 0.0, 0.0]), gain=torch.tensor([0.1, 0.5, 0.3, -0.2]))
    assert tied.ranking() == [1, 0, 2, 3]
    history = [torch.tensor([0.2, 0.4]), torch.tensor([0.0, 0.1])]
    tied = SearchResult(z=torch.tensor([0.0, 0.0]), history=history)
    assert tied.top(1) == [1]


def test_misaligned_counterfactual_is_explained(stg_corpus):
    from catlit.models.embedded import train_tokenizer
    from catlit.tracing.pairs import MisalignedPair, TracePair, encode_pairs

    tok = train_tokenizer(stg_corpus)
    labels = ("High Risk", "Low Risk")
    bad = TracePair("Smoking: 3 Answer: ", labels, source="Smoking: 3 and more Answer: ", origin="x:1")
    with pytest.raises(MisalignedPair, match=r"x:1: base and source do not align token for token"):
        encode_pairs(tok, [bad])
    good = TracePair("Smoking: 3 Answer: ", labels, source="Smoking: 8 Answer: ")
    encoded, skipped = encode_pairs(tok, [bad, good], misaligned="skip")
    assert skipped == 1 and len(encoded) == 1


def mib_faithfulness_by_hand(model, pairs, circuit: set[tuple[int, int]]) -> float:
    """MIB's node-level faithfulness, written out: the clean input (the pair's source) runs; every
    head outside the circuit has its output (the output projection's input slice) fixed at the
    corrupted input's (the pair's base); (m(S) − m(∅)) / (m(all) − m(∅)), m the logit difference."""
    layout = Layout(model)
    heads, width = layout.n_heads, layout.head_width

    def last_logits(ids, fixed=None, record=None, keep=frozenset()):
        def pre(module, args, layer):
            if record is not None:
                record[layer] = args[0].detach().clone()
            if fixed is None:
                return None
            x = args[0].clone()
            for h in range(heads):
                if (layer, h) not in keep:
                    x[..., h * width : (h + 1) * width] = fixed[layer][..., h * width : (h + 1) * width]
            return (x, *args[1:])

        hooks = [
            site.attn_out.register_forward_pre_hook(lambda m, a, layer=i: pre(m, a, layer))
            for i, site in enumerate(layout.layers)
        ]
        try:
            with torch.no_grad():
                return model(input_ids=torch.tensor([ids])).logits[0, -1]
        finally:
            for hook in hooks:
                hook.remove()

    m_s, m_empty, m_all = [], [], []
    for pair in pairs:
        (clean,), (corrupted,) = pair.source_seqs, pair.seqs
        (_, _, a, _), (_, _, b, _) = pair.scores
        corrupted_outputs: dict = {}
        last_logits(corrupted, record=corrupted_outputs)
        for out, keep in ((m_s, circuit), (m_empty, frozenset()), (m_all, None)):
            logits = last_logits(clean) if keep is None else last_logits(clean, corrupted_outputs, keep=keep)
            out.append(float(logits[a] - logits[b]))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return (mean(m_s) - mean(m_empty)) / (mean(m_all) - mean(m_empty))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_mibs_intervention_is_mibs_faithfulness_written_out(arch):
    from catlit.tracing import measures

    model = tiny_model(arch, seed=3)
    pairs = random_pairs(n=8, change_at=1, seed=5)
    tracer = tracer_for(model, pairs=pairs, effect="logit_diff").swapped()
    prepared = tracer.prepare(list(range(len(pairs))))
    full = tracer.evaluate(tracer.space.full(1.0), prepared)
    circuit = [(0, 1), (1, 2), (1, 3)]
    order = [layer * 4 + h for layer, h in circuit]
    order += [i for i in range(8) if i not in order]
    curve = measures.curves(tracer, prepared, [order], [3, 8], full, "log", intervention="mib")
    expected = mib_faithfulness_by_hand(model, pairs, set(circuit))
    assert curve["sufficiency"][0] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert curve["sufficiency"][1] == pytest.approx(1.0)  # every head in the circuit: the clean run
    plain = tracer_for(model, pairs=pairs, effect="logit_diff")
    plain_prepared = plain.prepare(list(range(len(pairs))))
    plain_full = plain.evaluate(plain.space.full(1.0), plain_prepared)
    own = measures.curves(plain, plain_prepared, [order], [3, 8], plain_full, "log")["sufficiency"][0]
    assert abs(own - expected) > 1e-3  # catlit's own intervention is another measure (heads compose)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_circuit_tracer_searches_and_scores_in_mibs_terms(arch):
    model = tiny_model(arch, seed=3)
    pairs = random_pairs(n=8, change_at=1, seed=5)
    tracer = tracer_for(model, pairs=pairs, effect="logit_diff").circuits()
    space, prepared = tracer.space, tracer.prepare(list(range(len(pairs))))
    circuit = [(0, 1), (1, 2), (1, 3)]
    kept = space.from_indices([layer * 4 + h for layer, h in circuit])
    full = tracer.evaluate(space.full(1.0), prepared)
    assert tracer.evaluate(space.full(0.0), prepared) == pytest.approx(0.0, abs=1e-6)  # nothing kept
    assert tracer.evaluate(kept, prepared) / full == pytest.approx(
        mib_faithfulness_by_hand(model, pairs, set(circuit)), rel=1e-4, abs=1e-5
    )  # a set's effect over every component's is MIB's faithfulness of that circuit
    z = space.full(0.5, requires_grad=True)  # PGB-CT's soft mask: the loss reaches every head
    batch, cache = prepared[0]
    loss, _ = tracer.loss(batch, z, cache, loss="relative", scale=abs(full))
    loss.backward()
    assert z["heads"].grad.abs().sum() > 0 and torch.isfinite(z["heads"].grad).all()
    with pytest.raises(ValueError, match="needs source=counterfactual"):
        tracer_for(model, pairs=pairs, source="zero").circuits()
