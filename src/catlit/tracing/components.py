"""The components a mask ranges over, their names, and the soft intervention at one hook point.

A component kind lives at one hook point (see `catlit.hooks.points`) with `size` components per layer:

  heads        one per attention head          attn.hook_z (head output) / attn.hook_pattern
  mlp          one per MLP output dimension     hook_mlp_out   (the residual-stream width)
  neurons      one per MLP hidden neuron        mlp.hook_post  (the MLP's wide hidden layer)
  attn_blocks  one per layer, the whole block   hook_attn_out
  mlp_blocks   one per layer, the whole block   hook_mlp_out

The soft intervention is x <- (1 - z) * x_base + z * x_source, at the selected positions only; an
attention pattern is mixed on the prompt's block (query and key positions both in the prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from catlit.models.architectures import Layout

HEAD_MODES = ("head_output", "attention_pattern")
KINDS = ("heads", "mlp", "neurons", "attn_blocks", "mlp_blocks")


@dataclass(frozen=True)
class Group:
    kind: str
    point: str
    n_layers: int
    size: int  # components per layer

    @property
    def numel(self) -> int:
        return self.n_layers * self.size

    def name(self, layer: int, index: int) -> str:
        return {
            "heads": f"L{layer}H{index}",
            "mlp": f"L{layer}.mlp_out[{index}]",
            "neurons": f"L{layer}.neuron[{index}]",
            "attn_blocks": f"L{layer}.attn",
            "mlp_blocks": f"L{layer}.mlp",
        }[self.kind]


def _group(kind: str, layout: Layout, head_mode: str) -> Group:
    if kind == "heads":
        point = "attn.hook_z" if head_mode == "head_output" else "attn.hook_pattern"
        return Group(kind, point, layout.n_layers, layout.n_heads)
    point, size = {
        "mlp": ("hook_mlp_out", layout.d_model),
        "neurons": ("mlp.hook_post", layout.d_mlp),
        "attn_blocks": ("hook_attn_out", 1),
        "mlp_blocks": ("hook_mlp_out", 1),
    }[kind]
    return Group(kind, point, layout.n_layers, size)


class ComponentSpace:
    """An ordered set of component groups; masks are dicts {kind: tensor [n_layers, size]}."""

    def __init__(self, layout: Layout, kinds, head_mode: str = "head_output"):
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"components={kinds}: choose one or more of {KINDS}")
        if head_mode not in HEAD_MODES:
            raise ValueError(f"head_mode={head_mode!r}; choose from {HEAD_MODES}")
        self.layout, self.head_mode = layout, head_mode
        self.groups = [_group(k, layout, head_mode) for k in dict.fromkeys(kinds)]
        self.numel = sum(g.numel for g in self.groups)

    @property
    def points(self) -> set[str]:
        return {g.point for g in self.groups}

    def full(self, value: float, device=None, requires_grad: bool = False) -> dict[str, torch.Tensor]:
        return {
            g.kind: torch.full((g.n_layers, g.size), float(value), device=device, requires_grad=requires_grad)
            for g in self.groups
        }

    def flatten(self, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([mask[g.kind].reshape(-1) for g in self.groups])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for g in self.groups:
            out[g.kind] = flat[start : start + g.numel].view(g.n_layers, g.size)
            start += g.numel
        return out

    def from_indices(self, indices, device=None) -> dict[str, torch.Tensor]:
        """A hard mask: 1 on the flat component indices given, 0 elsewhere."""
        flat = torch.zeros(self.numel, device=device)
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=device)
        if idx.numel():
            flat[idx] = 1.0
        return self.unflatten(flat)

    def locate(self, index: int) -> tuple[Group, int, int]:
        """(group, layer, index within the layer) of a flat index."""
        for g in self.groups:
            if index < g.numel:
                return g, index // g.size, index % g.size
            index -= g.numel
        raise IndexError(index)

    def name(self, index: int) -> str:
        g, layer, i = self.locate(index)
        return g.name(layer, i)

    def describe(self, index: int) -> dict:
        g, layer, i = self.locate(index)
        hook = f"blocks.{layer}.{g.point}"  # TransformerLens's hook name
        return {"name": g.name(layer, i), "kind": g.kind, "layer": layer, "index": i, "hook": hook}


def mix(x: torch.Tensor, source, z: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(1 - z) * x + z * source at the selected positions; `z` holds one layer's [size] values.

    x is the hook point's tensor [B, T, width] (width split into `size` equal slices, one per
    component); `positions` is [B, T] (bool or 0/1): which positions are intervened on.
    """
    b, t, width = x.shape
    size = z.numel()
    xs = x.view(b, t, size, width // size)
    src = (
        source
        if not torch.is_tensor(source) or source.dim() == 0
        else source.view(*source.shape[:2], size, -1)
    )
    weight = z.view(1, 1, size, 1) * positions[:, :, None, None].to(z.dtype)
    return (xs + weight.to(x.dtype) * (src - xs)).view(b, t, width)


def mix_pattern(x: torch.Tensor, source, z: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """Attention probabilities [B, heads, T, T]: (1 - z_h) * x + z_h * source on the block of query
    `rows` x key `cols` ([B, T] bool each), the base run's probabilities elsewhere."""
    block = rows[:, None, :, None] & cols[:, None, None, :]
    if not torch.is_tensor(source) or source.dim() == 0:
        source = torch.as_tensor(source, dtype=x.dtype, device=x.device).expand_as(x)
    if not (z.requires_grad or x.requires_grad):
        return x + (z.view(1, -1, 1, 1) * block).to(x.dtype) * (source - x)
    return _PatternMix.apply(x, source, z, block)


class _PatternMix(torch.autograd.Function):
    """`mix_pattern` whose backward keeps only references to x (already kept by the softmax) and to
    the source (already in the cache): no [B, heads, T, T] difference or weight map per layer."""

    @staticmethod
    def forward(ctx, x, source, z, block):
        ctx.save_for_backward(x, source, z, block)
        return x + (z.view(1, -1, 1, 1) * block).to(x.dtype) * (source - x)

    @staticmethod
    def backward(ctx, grad):
        x, source, z, block = ctx.saved_tensors
        weight = (z.view(1, -1, 1, 1) * block).to(grad.dtype)
        grad_x = grad - grad * weight if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[2]:
            grad_z = (grad * (source - x) * block).float().sum((0, 2, 3)).to(z.dtype)
        return grad_x, None, grad_z, None
