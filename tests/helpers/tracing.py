"""Hand-made tracing pairs and planted models, shared by the tracing tests."""

from __future__ import annotations

import torch

from catlit.models.architectures import Layout
from catlit.tracing.pairs import EncodedPair
from catlit.tracing.planted import orient, plant_heads  # noqa: F401  (re-exported for the tests)
from tests.helpers.models import VOCAB, tiny_config, tiny_model  # noqa: F401  (re-exported for the tests)

ARCHS = ("gpt2", "llama", "qwen2")
EVERY_ARCH = (*ARCHS, "qwen3", "mistral")  # for the exactness tests


def hand_pair(base: list[int], source: list[int] | None, cands=(7, 9), origin: str = "pair") -> EncodedPair:
    """A pair given as token ids: the candidates are read at the last position."""
    n = len(base)
    return EncodedPair(
        seqs=[list(base)],
        source_seqs=None if source is None else [list(source)],
        prompt_lens=[n],
        scores=[(0, n - 1, tok, c) for c, tok in enumerate(cands)],
        noised=[[]],
        origin=origin,
    )


def random_pairs(n: int = 6, length: int = 8, change_at: int = 2, seed: int = 0) -> list[EncodedPair]:
    """Pairs whose source differs from the base at one position before the last."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        base = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        source = list(base)
        source[change_at] = (base[change_at] + 1 + i) % (VOCAB - 3) + 3
        pairs.append(hand_pair(base, source, origin=f"pair{i}"))
    return pairs


def plant_mlp_dims(model, planted: list[int], readout: float = 10.0):
    """Llama: the change sits at the last token; only the last layer's MLP output dims `planted`
    reach the unembedding (attention silenced, embeddings zero on those dims, the unembedding reads
    only them; the two last tokens have embeddings of equal norm, so the final norm cannot leak)."""
    layout = Layout(model)
    keep = torch.zeros(layout.d_model, dtype=torch.bool)
    keep[planted] = True
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(1)))
        emb[:, keep] = 0
        for layer, site in enumerate(layout.layers):
            site.attn_out.weight.zero_()
            if layer < layout.n_layers - 1:
                site.mlp_out.weight.zero_()
            else:
                site.mlp_out.weight[~keep] = 0
                site.mlp_out.weight[keep] *= 50
                for proj in (site.mlp.gate_proj, site.mlp.up_proj):
                    proj.weight.mul_(10)
        head = model.get_output_embeddings().weight
        head[:, ~keep] = 0
        head.mul_(readout)


def last_token_pairs(model, n: int = 16, length: int = 6, seed: int = 0) -> list[EncodedPair]:
    """Pairs that differ only in the last token, whose two embeddings are permutations of each other."""
    g = torch.Generator().manual_seed(seed)
    emb = model.get_input_embeddings().weight
    pairs = []
    for i in range(n):
        base = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        source = list(base)
        source[-1] = 3 + (base[-1] - 3 + 1 + i) % (VOCAB - 3)
        with torch.no_grad():
            emb[source[-1]] = emb[base[-1]][torch.randperm(emb.shape[1], generator=g)]
        pairs.append(hand_pair(base, source, origin=f"pair{i}"))
    return pairs


def synergy_model(gain: float = 1.7):
    """One layer, four heads with uniform attention (zero queries and keys) and no MLP path.

    Pairs of type 1 change the token at position 2 along embedding dim 0, type 2 along dim 1. Heads A
    and B (0, 1) carry type 1, head C (2) carries type 2 slightly more strongly than A or B alone, and
    head D (3) reads type 1 with the opposite sign (inhibition). The odds effect exp(Δ) − 1 is convex
    in Δ, so A and B together are worth far more than C plus either one, while each of them alone
    ranks below C: top-k by single effect picks C first, the joint optimum is {A, B}; and every
    component at once is worse than the subset without D.
    """
    model = tiny_model("llama", layers=1, heads=4, tie=False, kv_heads=4)
    attn, w = model.model.layers[0].self_attn, 8
    x1, y1, x2, y2, a_tok, b_tok = 20, 21, 22, 23, 7, 9
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
            proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(1)))
        emb[:, :3] = 0  # dims 0, 1: the two signals; dim 2: the readout
        emb[x1, 0], emb[y1, 0], emb[x2, 1], emb[y2, 1] = -3.0, 3.0, -3.0, 3.0
        emb[y1, 3:], emb[y2, 3:] = emb[x1, 3:], emb[x2, 3:]
        for head, dim, out in ((0, 0, 1.0), (1, 0, 1.0), (2, 1, 1.07), (3, 0, -0.5)):
            attn.v_proj.weight[head * w, dim] = 1.0
            attn.o_proj.weight[2, head * w] = out
        readout = model.lm_head.weight
        readout[:, 2] = 0
        readout[a_tok, 2], readout[b_tok, 2] = gain, -gain
    g = torch.Generator().manual_seed(0)
    pairs = []
    for i in range(16):
        ctx = torch.randint(24, VOCAB, (6,), generator=g).tolist()
        (x, y), base, source = ((x1, y1) if i % 2 == 0 else (x2, y2)), list(ctx), list(ctx)
        base[2], source[2] = x, y
        pairs.append(hand_pair(base, source, cands=(a_tok, b_tok), origin=f"type{i % 2 + 1}:{i}"))
    return model, pairs
