"""Attention capture: a forward pass -> the per-row statistics (`RowStats`) the Re-Attention loss needs.

Two captures share one contract: `attached(model)` (a context manager: everything the capture needs
of the model exists only inside it and is removed on exit, also after an exception), `bind(batch)`
before a training forward, `forward_kwargs()`, `stats(outputs, batch)`, and `unbind()` once the
batch's backward is done:

- `eager`: reads the full maps returned with `output_attentions=True` under eager attention
  (B·H·T² probabilities per layer, kept until backward). The reference behaviour.
- `efficient`: keeps the model's fast attention (SDPA, or flash where installed) for the forward and
  backward, and recomputes, in fp32 and differentiably, softmax(q·kᵀ) only for the query rows that
  carry a causal mask, only in the selected layers and heads, reducing each row at once to its two
  sums. It plugs in through transformers' model-agnostic seam (`catlit.hooks.interface`): while
  attached, the model runs `catlit_<base>`, which calls the base attention and hands q and k to the
  capture tapped on each attention module of the architecture table.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from catlit.hooks.interface import (
    Taps,
    attention_implementation,
    current_attention,
    is_fast_attention,
    register_attention,
)
from catlit.hooks.row_stats import RowStats, row_stats
from catlit.hooks.selection import LayerHeadSelection
from catlit.models.architectures import Layout

CAPTURE_TAPS = Taps("attention capture")  # attention module -> the capture's record(layer=...)


def check_checkpointing(model) -> None:
    """A reentrant checkpoint reruns each layer's forward under no_grad: captured statistics would carry
    no gradient and L_attn would silently train nothing. Refuse it."""
    for module in model.modules():
        fn = getattr(module, "_gradient_checkpointing_func", None)
        active = getattr(module, "gradient_checkpointing", False) and fn is not None
        if active and getattr(fn, "keywords", {}).get("use_reentrant", True):
            raise RuntimeError(
                "gradient checkpointing with use_reentrant=True makes the Re-Attention loss train "
                "nothing; enable it with gradient_checkpointing_kwargs={'use_reentrant': False}"
            )


class EagerAttentionCapture:
    name = "eager"

    def __init__(self, layers="all", heads="all", per_head: bool = False):
        self.selection = LayerHeadSelection(layers, heads)
        self.per_head = per_head

    @contextlib.contextmanager
    def attached(self, model) -> Iterator[EagerAttentionCapture]:
        """The model runs eager attention (which returns its maps) inside the block."""
        check_checkpointing(model)
        with attention_implementation(model, "eager"):
            yield self

    def bind(self, batch: dict) -> None:
        pass

    def unbind(self) -> None:
        pass

    def forward_kwargs(self) -> dict:
        return {"output_attentions": True}

    def stats(self, outputs, batch: dict) -> RowStats:
        maps = getattr(outputs, "attentions", None)
        if not maps or any(m is None for m in maps):
            raise RuntimeError(
                "the model returned no attention maps with output_attentions=True (transformers' sdpa "
                "and flash kernels never do). CAT's eager capture needs attn_implementation='eager'."
            )
        layers = self.selection.layers(len(maps))
        mask, pad = batch["causal_mask"], batch["attention_mask"]
        if self.per_head:  # one unit per selected (layer, head)
            units = []
            for layer in layers:
                heads = self.selection.heads(layer, maps[layer].shape[1])
                for h in heads if heads is not None else range(maps[layer].shape[1]):
                    units.append(row_stats(maps[layer][:, h].float(), mask, pad))
            return stack_units(units)
        mean = torch.zeros_like(maps[0][:, 0], dtype=torch.float32)
        for layer in layers:  # accumulate: never stack L maps
            heads = self.selection.heads(layer, maps[layer].shape[1])
            layer_map = maps[layer] if heads is None else maps[layer][:, heads]
            mean = mean + layer_map.float().mean(dim=1)
        return row_stats(mean / len(layers), mask, pad)


def stack_units(units: list[RowStats]) -> RowStats:
    """Per-unit statistics (same rows, same counts) -> sums with a trailing unit axis [B, T, U]."""
    first = units[0]
    return RowStats(
        cause_sum=torch.stack([u.cause_sum for u in units], -1),
        cause_count=first.cause_count,
        other_sum=torch.stack([u.other_sum for u in units], -1),
        other_count=first.other_count,
        has_mask=first.has_mask,
    )


@functools.cache
def capture_attention(base: str) -> str:
    """Register `catlit_<base>`: `base` attention for the output + row statistics on the side."""
    if not is_fast_attention(base):
        raise ValueError(
            f"the efficient capture wraps a registered fast attention (sdpa, flash_attention_2, ...), "
            f"not {base!r}; use method.capture=eager for eager attention"
        )

    def attention(module, query, key, value, attention_mask, **kwargs):
        out = ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, **kwargs)
        record = CAPTURE_TAPS.get(module)
        if record is not None:
            record(query, key, attention_mask, kwargs.get("scaling"))
        return out[0], None

    return register_attention(f"catlit_{base}", attention, mask_like=base)


class RowAttentionCapture:
    """The efficient capture (see the module docstring)."""

    name = "efficient"

    def __init__(self, layers="all", heads="all", per_head: bool = False):
        self.selection = LayerHeadSelection(layers, heads)
        self.per_head = per_head
        self.bound: dict | None = None
        self.records: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.layer_list: list[int] = []

    @contextlib.contextmanager
    def attached(self, model) -> Iterator[RowAttentionCapture]:
        """Inside the block the model runs `catlit_<its attention>` and every attention module of the
        architecture table is tapped; on exit the taps go, the implementation and the batch unbind."""
        check_checkpointing(model)
        name = capture_attention(current_attention(model))
        layout = Layout(model)
        self.layer_list = self.selection.layers(layout.n_layers)
        taps = {
            module: functools.partial(self._tap, layer)
            for layer, module in enumerate(layout.attention_modules())
        }
        try:
            with CAPTURE_TAPS.attached(taps), attention_implementation(model, name):
                yield self
        finally:
            self.unbind()

    def _tap(self, layer: int, query, key, attention_mask, scaling) -> None:
        if self.bound is not None:
            self.record(layer, query, key, attention_mask, scaling)

    def forward_kwargs(self) -> dict:
        return {}

    def bind(self, batch: dict) -> None:
        """Prepare the masked rows of this batch. Stays bound through backward, where a non-reentrant
        gradient checkpoint recomputes each layer (and its records, identically)."""
        mask = batch["causal_mask"]
        pad = batch["attention_mask"].bool()
        b, t = pad.shape
        has = mask.any(-1)
        n_rows = has.sum(1)
        r = max(int(n_rows.max()), 1)
        order = torch.argsort((~has).to(torch.int8), dim=1, stable=True)[:, :r]  # masked rows first
        valid = torch.arange(r, device=pad.device)[None] < n_rows[:, None]
        rows = torch.where(valid, order, 0)
        cols = torch.arange(t, device=pad.device)
        visible = (cols[None, None] <= rows[..., None]) & pad[:, None, :]  # j <= i, non-pad [B, R, T]
        mask_rows = mask.gather(1, rows[..., None].expand(b, r, t))
        self.bound = {
            "rows": rows,
            "valid": valid,
            "visible": visible,
            "cause": mask_rows & visible,
            "other": visible & ~mask_rows,
        }
        self.records = {}

    def unbind(self) -> None:
        self.bound, self.records = None, {}

    def record(self, layer: int, query, key, attention_mask, scaling) -> None:
        bound = self.bound
        t = bound["visible"].shape[-1]
        if layer not in self.layer_list or query.shape[2] != t or key.shape[2] != t:
            return  # an unselected layer, or not this batch's full-sequence forward
        rows, valid = bound["rows"], bound["valid"]
        b, h, _, d = query.shape
        r, kv_heads = rows.shape[1], key.shape[1]
        scaling = d**-0.5 if scaling is None else scaling
        with torch.autocast(query.device.type, enabled=False):  # statistics in fp32 under autocast
            dtype = torch.promote_types(query.dtype, torch.float32)  # fp32 at least, fp64 stays fp64
            q = query.gather(2, rows[:, None, :, None].expand(b, h, r, d)).to(dtype)
            # grouped-query attention: each key head serves h // kv_heads query heads, no repeat_kv copy
            q = q.view(b, kv_heads, (h // kv_heads) * r, d)
            scores = torch.matmul(q, key.to(dtype).transpose(-1, -2)).view(b, h, r, -1) * scaling
            visible = self._visible(attention_mask, rows, bound["visible"])
            visible = visible | ~valid[:, None, :, None]  # padded rows: finite softmax, dropped below
            probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
            heads = self.selection.heads(layer, h)
            probs = probs if heads is None else probs[:, heads]  # [B, H', R, T]
            if not self.per_head:
                probs = probs.mean(1, keepdim=True)  # the mean over heads is one unit
            cause = (probs * bound["cause"][:, None]).sum(-1).transpose(1, 2)  # [B, R, units]
            other = (probs * bound["other"][:, None]).sum(-1).transpose(1, 2)
            self.records[layer] = (cause, other)

    @staticmethod
    def _visible(attention_mask, rows, default):
        """Follow the model's own mask where it passes one (sliding windows, custom masks)."""
        if attention_mask is None or attention_mask.dim() != 4:
            return default[:, None]
        m = attention_mask[:, :1] if attention_mask.shape[1] > 1 else attention_mask
        m = m.gather(2, rows[:, None, :, None].expand(-1, 1, -1, m.shape[-1]))
        if m.dtype != torch.bool:
            m = m > torch.finfo(m.dtype).min / 2
        return m[..., -default.shape[-1] :]

    def stats(self, outputs, batch: dict) -> RowStats:
        if self.bound is None:
            raise RuntimeError("efficient attention capture: stats() without bind(batch) before the forward")
        missing = [layer for layer in self.layer_list if layer not in self.records]
        if missing:
            raise RuntimeError(
                f"efficient attention capture saw no attention call for layers {missing}: the model must "
                "route attention through transformers' AttentionInterface, inside capture.attached(model); "
                "use method.capture=eager otherwise"
            )
        bound = self.bound
        rows, valid = bound["rows"], bound["valid"]
        if self.per_head:  # every (layer, head) its own unit
            cause = torch.cat([self.records[layer][0] for layer in self.layer_list], -1)
            other = torch.cat([self.records[layer][1] for layer in self.layer_list], -1)
        else:  # the mean over layers of the per-layer head means: one unit, dropped
            n = len(self.layer_list)
            cause = (sum(self.records[layer][0] for layer in self.layer_list) / n)[..., 0]
            other = (sum(self.records[layer][1] for layer in self.layer_list) / n)[..., 0]
        b, t = batch["attention_mask"].shape

        def scatter(values: torch.Tensor) -> torch.Tensor:
            keep = valid if values.dim() == 2 else valid[..., None]
            values = torch.where(keep, values.to(cause.dtype), 0.0)
            index = rows if values.dim() == 2 else rows[..., None].expand_as(values)
            zeros = torch.zeros(b, t, *values.shape[2:], dtype=cause.dtype, device=values.device)
            return zeros.scatter_add(1, index, values)

        return RowStats(
            cause_sum=scatter(cause),
            cause_count=scatter(bound["cause"].sum(-1)),
            other_sum=scatter(other),
            other_count=scatter(bound["other"].sum(-1)),
            has_mask=scatter(valid.float()) > 0,
        )


CAPTURES = {"eager": EagerAttentionCapture, "efficient": RowAttentionCapture}


def make_capture(kind: str, layers="all", heads="all", per_head: bool = False):
    if kind not in CAPTURES:
        raise ValueError(f"method.capture={kind!r} is not available; choose from {sorted(CAPTURES)}")
    return CAPTURES[kind](layers, heads, per_head)
