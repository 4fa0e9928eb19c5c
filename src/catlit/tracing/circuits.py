"""Planted circuits with a known answer: tiny random models in which chosen components carry the
effect, for checking a tracing method (the suite in `benchmarks/tracing_suite.py` and the tests).

Every case is a real Hugging Face model (GPT-2 or a Llama-like family: Llama, Qwen2, Mistral, ...)
edited in place. Eight embedding dimensions are reserved (`DIMS`); every token has the same norm
and a constant 1 on `const`. Pairs change one context token from X to Y, which differ only on the
`signal` dimension, and read the odds of two candidate tokens whose unembeddings are ±g on the
readout dimension(s). Planted heads attend uniformly (zero queries and keys), read `signal` through
their values and write to one reserved dimension; a unit of the last layer's MLP combines them:

  single     one head writes the readout                                  truth: that head
  and        two heads write p and q; the unit is silu(a·p)·q (gated MLPs)  both heads; neither
             or act(k·(p + q − 1)) (GPT-2): neither head moves it alone      alone moves the effect
  or         the base run carries the signal; two heads copy it; the unit   both heads; patching
             is act(k·(1 − p − q)): either head's copy keeps it off, so       either alone does
             only patching both turns it on (redundancy)                     nothing
  inhibitor  two heads write +readout, a third −1.2 × their sum: every      the two positive heads
             component at once is worse than the two without the third
  mlp        the last token changes; three output dimensions of the last    those three dimensions
             layer's MLP carry it to the readout (components = mlp)
  null       every weight tensor's entries shuffled, pairs with random       none: no method should
             changes and random candidates (no consistent direction)         beat random sets held out
  decoy      an `and` pair plus a decoy head with a strong effect of its     the `and` pair
             own that also subtracts `strength` × signal from p (at z = 0.5
             its half-on inhibition hides the pair's synergy)

Unit inputs are calibrated on the model itself (the normalised MLP input at the last position), so
the cases hold whatever the normalisation; the readout gain is set so that patching the planted
circuit changes the log odds by `target` on average. Other heads and MLP neurons keep random weights
(their writes scaled by `distractor`, never into the reserved dimensions but the readout; neurons
never read them); in the head cases every other head also gets a direct path of its own (see
`_distract`), so one-at-a-time methods have something to rank above a circuit's members.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from catlit.models.architectures import Layout
from catlit.tracing.components import ComponentSpace
from catlit.tracing.engine import Tracer
from catlit.tracing.pairs import EncodedPair

DIMS = {"signal": 0, "p": 1, "q": 2, "readout": 3, "const": 4, "r2": 5, "r3": 6, "spare": 7}
VOCAB, LENGTH, CHANGE_AT = 64, 8, 2
X, Y, CAND_A, CAND_B = 20, 21, 7, 9
WRITE = 0.25  # a planted head's write per unit of signal it reads
CASES = ("single", "and", "or", "inhibitor", "mlp", "null")
FAMILIES = ("gpt2", "llama", "qwen2")


@dataclass
class Case:
    name: str
    family: str
    model: nn.Module
    pairs: list[EncodedPair]
    kind: str  # the component kind traced
    truth: list[int]  # flat component indices of the planted circuit (empty: none)
    notes: dict = field(default_factory=dict)
    heldout: list[int] | None = None  # pairs to hold out, where the case prescribes them

    def tracer(self, **kw) -> Tracer:
        space = ComponentSpace(Layout(self.model), self.kind)
        return Tracer(self.model, space, self.pairs, pad_id=0, **kw)


def tiny(family: str, layers: int = 2, heads: int = 4, width: int = 64, seed: int = 0) -> nn.Module:
    """A tiny random model of `family` (untied, one key/value head per query head), frozen."""
    torch.manual_seed(seed)
    if family == "gpt2":
        options = dict(n_embd=width, n_layer=layers, n_head=heads, n_positions=64, vocab_size=VOCAB)
        options.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)
    else:
        options = dict(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=64,
            vocab_size=VOCAB, tie_word_embeddings=False,
        )  # fmt: skip
    config = AutoConfig.for_model(family, **options)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


# ---- weights as [out, in] views, whatever the module class ------------------------------------


def matrix(module: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (GPT-2's Conv1D stores [in, out]): a view, so writes edit the model."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


def _bias(module: nn.Module) -> torch.Tensor | None:
    return getattr(module, "bias", None)


class Sites:
    """The projections a planted circuit edits, resolved from the architecture table."""

    def __init__(self, model: nn.Module):
        self.layout = layout = Layout(model)
        arch = layout.arch
        if len(arch.attn_in) not in (1, 3) or len(arch.mlp_in) not in (1, 2):
            raise ValueError(
                f"planted circuits need q/k/v (or fused qkv) and gate+up (or fc) MLPs; got {arch}"
            )
        self.gated = len(arch.mlp_in) == 2
        self.d, self.hd, self.heads = layout.d_model, layout.head_width, layout.n_heads
        self.layer_modules = [site.layer for site in layout.layers]
        self.arch = arch

    def qkv(self, layer: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """[(weight [out, in], bias)] of q, k, v (views; a fused projection is split in three)."""
        mods = [self.layer_modules[layer].get_submodule(p) for p in self.arch.attn_in]
        if len(mods) == 3:
            return [(matrix(m), _bias(m)) for m in mods]
        w, b = matrix(mods[0]), _bias(mods[0])
        n = w.shape[0] // 3
        return [(w[i * n : (i + 1) * n], None if b is None else b[i * n : (i + 1) * n]) for i in range(3)]

    def head_rows(self, layer: int, head: int, which: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.qkv(layer)[which]
        rows = slice(head * self.hd, (head + 1) * self.hd)
        return w[rows], None if b is None else b[rows]

    def head_out(self, layer: int, head: int) -> torch.Tensor:
        """[d_model, head width]: what the head writes into the residual stream."""
        return matrix(self.layout.layers[layer].attn_out)[:, head * self.hd : (head + 1) * self.hd]

    def mlp_in(self, layer: int) -> list[nn.Module]:
        return [self.layer_modules[layer].get_submodule(p) for p in self.arch.mlp_in]

    def mlp_out(self, layer: int) -> nn.Module:
        return self.layout.layers[layer].mlp_out


# ---- building blocks ----------------------------------------------------------------------------


def _prepare(model: nn.Module, distractor: float, seed: int) -> Sites:
    """Equal-norm embeddings with the reserved dimensions cleared (`const` = 1), no position
    embeddings, biases cleared, MLPs silent; heads keep random weights, their writes scaled by
    `distractor` and kept out of the reserved dimensions except the readout."""
    sites = Sites(model)
    g = torch.Generator().manual_seed(seed)
    reserved = list(DIMS.values())
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.randn(emb.shape, generator=g))
        emb[:, reserved] = 0
        bulk = [d for d in range(sites.d) if d not in reserved]
        emb[:, bulk] -= emb[:, bulk].mean(1, keepdim=True)  # zero mean, equal norm: a layer norm's
        emb.mul_(sites.d**0.5 / emb.norm(dim=1, keepdim=True))  # statistics are the same for every token
        emb[:, DIMS["const"]] = 1.0
        emb[Y] = emb[X]  # X and Y differ only where a case writes the signal
        positions = getattr(sites.layout.base, "transformer", None)
        if positions is not None and hasattr(positions, "wpe"):
            positions.wpe.weight.zero_()
        for module in model.modules():
            if isinstance(_bias(module), torch.Tensor) and module is not model.get_output_embeddings():
                module.bias.zero_()
        others = [d for d in reserved if d != DIMS["readout"]]
        for layer in range(sites.layout.n_layers):
            for module in sites.mlp_in(layer):  # random neurons never read the reserved dimensions
                matrix(module)[:, reserved] = 0
            down = matrix(sites.mlp_out(layer))
            down.mul_(distractor)
            down[others] = 0
            for head in range(sites.heads):
                out = sites.head_out(layer, head)
                out.mul_(distractor)
                out[others] = 0
        model.get_output_embeddings().weight.mul_(0)
    return sites


def _plant_head(sites: Sites, layer: int, head: int, writes: dict[str, float], reads: str = "signal"):
    """A head that attends uniformly, reads `reads` and writes gain × its reading to each dim."""
    with torch.no_grad():
        for which in (0, 1):  # zero queries and keys: uniform attention over the visible tokens
            w, b = sites.head_rows(layer, head, which)
            w.zero_()
            if b is not None:
                b.zero_()
        v, _ = sites.head_rows(layer, head, 2)
        v.zero_()
        v[0, DIMS[reads]] = 1.0
        out = sites.head_out(layer, head)
        out.zero_()
        for dim, gain in writes.items():
            # uniform attention averages over the tokens; WRITE keeps the residual's norm nearly fixed
            out[DIMS[dim], 0] = gain * LENGTH * WRITE
            if dim != "readout":  # and the opposite into `spare`: a layer norm's mean does not move
                out[DIMS["spare"], 0] -= gain * LENGTH * WRITE


def _readout(model: nn.Module, dims=("readout",)):
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for d in dims:
            head[CAND_A, DIMS[d]], head[CAND_B, DIMS[d]] = 1.0, -1.0


def _pairs(n: int, seed: int, change_at: int = CHANGE_AT) -> list[EncodedPair]:
    """Base has X, source Y at `change_at`; random context tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ctx = torch.randint(24, VOCAB, (LENGTH,), generator=g).tolist()
        base, source = list(ctx), list(ctx)
        base[change_at], source[change_at] = X, Y
        scores = [(0, LENGTH - 1, CAND_A, 0), (0, LENGTH - 1, CAND_B, 1)]
        out.append(EncodedPair([base], [source], [LENGTH], scores, [[]], f"planted:{i}"))
    return out


def _set_signal(model: nn.Module, amount: float = 1.0):
    with torch.no_grad():
        model.get_input_embeddings().weight[Y, DIMS["signal"]] = amount * 4.0


def _mlp_input(model: nn.Module, sites: Sites, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """The normalised input of `layer`'s MLP at the last position, averaged over the sequences."""
    seen = []
    handle = sites.layout.layers[layer].mlp.register_forward_pre_hook(lambda m, a: seen.append(a[0][:, -1]))
    with handle, torch.no_grad():
        model(input_ids=ids)
    return seen[0].mean(0)


def _ids(pairs: list[EncodedPair], source: bool) -> torch.Tensor:
    return torch.tensor([(p.source_seqs if source else p.seqs)[0] for p in pairs])


def _calibrate_readout(case: Case, target: float) -> None:
    """Scale the candidates' unembeddings so that patching the planted circuit moves the log odds by
    `target` on average."""
    tracer = case.tracer(effect="logit_diff")
    prepared = tracer.prepare(list(range(len(case.pairs))))
    full = tracer.evaluate(tracer.space.from_indices(case.truth), prepared)
    if abs(full) < 1e-9:
        raise RuntimeError(f"planted case {case.name} on {case.family}: patching everything does nothing")
    with torch.no_grad():
        head = case.model.get_output_embeddings().weight
        head[[CAND_A, CAND_B]] *= target / full


def _unit(
    sites: Sites, layer: int, gate: dict[str, float], up: dict[str, float] | None, bias: float, out: dict
):
    """One MLP neuron: gated act(gate·x) · (up·x), or act(gate·x + bias); writes `out` dims."""
    with torch.no_grad():
        mods = sites.mlp_in(layer)
        first = matrix(mods[0])
        first[0].zero_()
        for dim, w in gate.items():
            first[0, DIMS[dim]] = w
        if sites.gated:
            second = matrix(mods[1])
            second[0].zero_()
            for dim, w in (up or {}).items():
                second[0, DIMS[dim]] = w
        elif _bias(mods[0]) is not None:
            mods[0].bias[0] = bias
        down = matrix(sites.mlp_out(layer))
        down[:, 0] = 0
        for dim, w in out.items():
            down[DIMS[dim], 0] = w


def _affine(sites: Sites, coefs: dict[str, float], const: float, off, on, c: float):
    """Input weights (and bias) computing const + Σ coef · u_dim, where u_dim = (x − off)/(on − off)
    is 0 in the run without the signal and 1 in the run with it; the constant comes from the bias,
    or from the `const` dimension (value c at the MLP input) where the projection has no bias."""
    weights, bias = {}, const
    for dim, coef in coefs.items():
        span = float(on[DIMS[dim]] - off[DIMS[dim]])
        weights[dim] = coef / span
        bias -= coef * float(off[DIMS[dim]]) / span
    if sites.gated:
        weights["const"], bias = bias / c, 0.0
    return weights, bias


def _two_head_unit(sites, model, pairs, kind: str, k: float = 8.0):
    """Heads (0, 1) -> p and (0, 3) -> q; the last layer's unit combines them (see the module doc)."""
    _plant_head(sites, 0, 1, {"p": 1.0})
    _plant_head(sites, 0, 3, {"q": 1.0})
    last = sites.layout.n_layers - 1
    base, source = (_mlp_input(model, sites, last, _ids(pairs, s)) for s in (False, True))
    on, off = (source, base) if kind == "and" else (base, source)  # the run whose heads carry it
    c = float(base[DIMS["const"]])
    if kind == "and" and sites.gated:  # silu(2 u_p) · u_q
        gate, _ = _affine(sites, {"p": 2.0}, 0.0, off, on, c)
        up, _ = _affine(sites, {"q": 1.0}, 0.0, off, on, c)
        _unit(sites, last, gate, up, 0.0, {"readout": 1.0})
        return
    sign = 1.0 if kind == "and" else -1.0  # and: k (u_p + u_q − 1); or: k (1 − u_p − u_q)
    gate, bias = _affine(sites, {"p": sign * k, "q": sign * k}, -sign * k, off, on, c)
    _unit(sites, last, gate, {"const": 1.0 / c}, bias, {"readout": 1.0})


def _distract(sites: Sites, planted: set, seed: int, flip: bool = False) -> None:
    """Give every other head a direct path of its own: it reads the signal (keeping its random
    attention) and writes the readout with a gain of U(0.05, 0.3) × a planted head's, so that
    patching it raises the effect (lowers it for three in ten; `flip` when the base run carries the
    signal): one-at-a-time methods have effects to rank above a circuit's members."""
    rng = random.Random(seed + 7)
    with torch.no_grad():
        for layer in range(sites.layout.n_layers):
            for head in range(sites.heads):
                if (layer, head) in planted:
                    continue
                v, _ = sites.head_rows(layer, head, 2)
                v[0].zero_()
                v[0, DIMS["signal"]] = 1.0
                out = sites.head_out(layer, head)
                out[:, 0] = 0
                sign = (1.0 if rng.random() < 0.7 else -1.0) * (-1.0 if flip else 1.0)
                out[DIMS["readout"], 0] = rng.uniform(0.05, 0.3) * sign * LENGTH * WRITE


def _flat(space: ComponentSpace, layer: int, index: int, kind: str = "heads") -> int:
    offset = 0
    for g in space.groups:
        if g.kind == kind:
            return offset + layer * g.size + index
        offset += g.numel
    raise KeyError(kind)


def build(name: str, family: str, n_pairs: int = 32, seed: int = 0, distractor: float = 1.0,
          target: float = 3.0, strength: float = 1.5, layers: int = 2, heads: int = 4,
          width: int = 64) -> Case:  # fmt: skip
    """The planted case `name` (see the module docstring) on a tiny `family` model."""
    shape = dict(layers=layers, heads=heads, width=width)
    if name == "null":
        return _null(family, n_pairs, seed, shape)
    model = tiny(family, seed=seed, **shape)
    sites = _prepare(model, distractor, seed)
    kind, change_at = ("mlp", LENGTH - 1) if name == "mlp" else ("heads", CHANGE_AT)
    pairs = _pairs(n_pairs, seed + 1, change_at)
    _set_signal(model)
    if name == "or":  # the base run carries the signal: X gets it, Y not
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            emb[X, DIMS["signal"]], emb[Y, DIMS["signal"]] = emb[Y, DIMS["signal"]].item(), 0.0
    space = ComponentSpace(Layout(model), kind)
    notes = {}
    planted = {"single": {(0, 1)}, "and": {(0, 1), (0, 3)}, "or": {(0, 1), (0, 3)}}.get(name)
    planted = planted or {"decoy": {(0, 1), (0, 2), (0, 3)}, "inhibitor": {(0, 1), (0, 2), (1, 0)}}.get(name)
    if kind == "heads":
        _distract(sites, planted or set(), seed, flip=name == "or")
    if name == "single":
        _plant_head(sites, 0, 1, {"readout": 1.0})
        truth = [_flat(space, 0, 1)]
    elif name in ("and", "or"):
        _two_head_unit(sites, model, pairs, name)
        truth = [_flat(space, 0, 1), _flat(space, 0, 3)]
    elif name == "decoy":
        _two_head_unit(sites, model, pairs, "and")
        _plant_head(sites, 0, 2, {"readout": 1.0, "p": -strength})
        truth = [_flat(space, 0, 1), _flat(space, 0, 3)]
        notes["strength"] = strength
    elif name == "inhibitor":
        _plant_head(sites, 0, 1, {"readout": 1.0})
        _plant_head(sites, 1, 0, {"readout": 1.0})
        _plant_head(sites, 0, 2, {"readout": -1.2})
        truth = [_flat(space, 0, 1), _flat(space, 1, 0)]
    elif name == "mlp":
        last = sites.layout.n_layers - 1
        base = _mlp_input(model, sites, last, _ids(pairs, False))
        source = _mlp_input(model, sites, last, _ids(pairs, True))
        s1, c1 = float(source[DIMS["signal"]] - base[DIMS["signal"]]), float(base[DIMS["const"]])
        out = {"readout": 1.0, "r2": 1.0, "r3": 1.0}
        # gated: silu(2) · u_signal; GPT-2: gelu(1 + 2 u_signal) (the unit moves with the signal)
        gate = {"const": 2.0 / c1} if sites.gated else {"const": 1.0 / c1, "signal": 2.0 / s1}
        _unit(sites, last, gate, {"signal": 1.0 / s1}, 0.0, out)
        truth = sorted(_flat(space, last, DIMS[d], "mlp") for d in out)
    else:
        raise ValueError(f"unknown planted case {name!r}; choose from {(*CASES, 'decoy')}")
    _readout(model, ("readout", "r2", "r3") if name == "mlp" else ("readout",))
    case = Case(name, family, model, pairs, kind, truth, notes)
    _calibrate_readout(case, target)
    if name == "decoy":  # the decoy alone: half the pair's log-odds change
        decoy = _flat(space, 0, 2)
        tracer = case.tracer(effect="logit_diff")
        alone = tracer.evaluate(space.from_indices([decoy]), tracer.prepare(list(range(n_pairs))))
        with torch.no_grad():
            sites.head_out(0, 2)[DIMS["readout"], 0] *= 0.5 * target / alone
        case.notes["decoy"] = decoy
    return case


def _null(family: str, n_pairs: int, seed: int, shape: dict) -> Case:
    """Every weight tensor's entries permuted; pairs change a random position to a random token and
    read a random pair of candidates, so no component has an effect of consistent sign. The held-out
    pairs (odd indices) read candidates from the other half of the vocabulary than the search pairs,
    so a set fitted to the search pairs' candidate tokens cannot pass for a circuit."""
    model = tiny(family, seed=seed, **shape)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=g)])
    rng = random.Random(seed + 1)
    half = (3 + VOCAB) // 2
    pairs = []
    for i in range(n_pairs):
        base = [rng.randrange(3, VOCAB) for _ in range(LENGTH)]
        source = list(base)
        at = rng.randrange(LENGTH - 1)
        source[at] = 3 + (base[at] - 3 + rng.randrange(1, VOCAB - 3)) % (VOCAB - 3)
        a, b = rng.sample(range(half, VOCAB) if i % 2 else range(3, half), 2)
        scores = [(0, LENGTH - 1, a, 0), (0, LENGTH - 1, b, 1)]
        pairs.append(EncodedPair([base], [source], [LENGTH], scores, [[]], f"null:{i}"))
    return Case("null", family, model, pairs, "heads", [], heldout=list(range(1, n_pairs, 2)))
