"""Named hook points, read or rewritten through temporary hooks that are always removed on exit.

Points carry TransformerLens's names, so users find them where they expect; each is a module of the
architecture table (`catlit.models.architectures`):
  blocks.{L}.attn.hook_z        input of attn_out, viewed [B, T, heads, head width] (the heads' outputs)
  blocks.{L}.attn.hook_pattern  post-softmax attention probabilities [B, heads, T, T]
  blocks.{L}.hook_attn_out      output of the attention block [B, T, d_model]
  blocks.{L}.mlp.hook_post      MLP hidden neurons, input of mlp_out [B, T, d_mlp]
  blocks.{L}.hook_mlp_out       output of the MLP block [B, T, d_model]

`attached(layout, fns)` registers, for every (point, layer) key, functions x -> x' (a function may
return None to leave x unchanged, e.g. one that records) and removes every handle when the block
exits, also on an exception. Attention patterns need the probabilities, which fast kernels never
materialise: while a pattern point is attached, the model runs `catlit_pattern`, an eager attention
function that hands the post-softmax probabilities to the tap of its module, and the previous
implementation comes back on exit.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

from catlit.hooks.interface import Taps, attention_implementation, register_attention
from catlit.models.architectures import Layout

POINTS = ("attn.hook_z", "attn.hook_pattern", "hook_attn_out", "mlp.hook_post", "hook_mlp_out")
PATTERN_ATTENTION = "catlit_pattern"
PATTERN_TAPS = Taps("attention-pattern hook")

HookFn = Callable[[torch.Tensor], torch.Tensor | None]


def _causal_visible(tq: int, tk: int, device) -> torch.Tensor:
    # query i (counted from the end of the keys when tq < tk, as with a cache) sees keys j <= i
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)


def pattern_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention whose probabilities pass through the module's pattern tap (if any)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: every key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scaling
    tq, tk = scores.shape[-2:]
    if attention_mask is None:  # the mask function may skip the mask when causality alone suffices
        scores = scores.masked_fill(~_causal_visible(tq, tk, scores.device), float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :tk], float("-inf"))
    else:
        scores = scores + attention_mask[..., :tk].float()
    probs = scores.softmax(-1)
    tap = PATTERN_TAPS.get(module)
    if tap is not None:
        probs = tap(probs)
    out = torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous()
    return out, probs


def _chain(fns: list[HookFn]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            y = fn(x)
            x = x if y is None else y
        return x

    return run


def _pre_hook(run):
    def hook(module, args):
        return (run(args[0]), *args[1:])

    return hook


def _post_hook(run):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (run(output[0]), *output[1:])
        return run(output)

    return hook


@contextlib.contextmanager
def attached(layout: Layout, fns: dict[tuple[str, int], list[HookFn]]) -> Iterator[None]:
    """Attach `fns[(point, layer)]` for the duration of the block (see the module docstring)."""
    handles, patterns = [], {}
    try:
        for (point, layer), chain in fns.items():
            if not chain:
                continue
            run, site = _chain(chain), layout.layers[layer]
            if point == "attn.hook_z":
                handles.append(site.attn_out.register_forward_pre_hook(_pre_hook(run)))
            elif point == "mlp.hook_post":
                handles.append(site.mlp_out.register_forward_pre_hook(_pre_hook(run)))
            elif point == "hook_attn_out":
                handles.append(site.attention.register_forward_hook(_post_hook(run)))
            elif point == "hook_mlp_out":
                handles.append(site.mlp.register_forward_hook(_post_hook(run)))
            elif point == "attn.hook_pattern":
                patterns[site.attention] = run
            else:
                raise ValueError(f"unknown hook point {point!r}; known: {POINTS}")
        with contextlib.ExitStack() as stack:
            if patterns:
                stack.enter_context(PATTERN_TAPS.attached(patterns))
                name = register_attention(PATTERN_ATTENTION, pattern_attention)
                stack.enter_context(attention_implementation(layout.model, name))
            yield
    finally:
        for handle in handles:
            handle.remove()


def recorder(points, n_layers: int) -> tuple[dict[tuple[str, int], list[HookFn]], dict]:
    """Hook functions that store each point's tensor (detached) into the returned dict."""
    store: dict[tuple[str, int], torch.Tensor] = {}
    fns: dict[tuple[str, int], list[HookFn]] = defaultdict(list)
    for point in points:
        for layer in range(n_layers):

            def save(x, key=(point, layer)):
                store[key] = x.detach()

            fns[(point, layer)].append(save)
    return fns, store
