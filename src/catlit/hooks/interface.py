"""transformers' attention seam, used in one way: registered attention functions, a temporary switch of
the implementation a model runs, and per-module taps that exist only inside a `with` block.

- `register_attention(name, fn, mask_like)`: registers `fn` in `AttentionInterface` and the mask
  function of `mask_like` in `AttentionMaskInterface` under the same name (without the second, a new
  name silently runs without its causal mask). Idempotent.
- `attention_implementation(model, name)`: the model runs `name` inside the block; the previous
  implementation is restored on exit, also after an exception.
- `Taps`: functions keyed by attention module that a registered attention function looks up. They
  live in catlit's own table, never on the model, and are removed when the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from weakref import WeakKeyDictionary

from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from catlit.models.architectures import base_model

_REGISTERED: dict[str, Callable] = {}


def register_attention(name: str, fn: Callable, mask_like: str = "sdpa") -> str:
    if _REGISTERED.get(name) is not fn:
        if mask_like not in ALL_MASK_ATTENTION_FUNCTIONS:
            raise ValueError(f"attention {name!r}: no mask function registered for {mask_like!r}")
        AttentionInterface.register(name, fn)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_like])
        _REGISTERED[name] = fn
    return name


def is_fast_attention(name: str) -> bool:
    """A registered attention function with a mask function (sdpa, flash_attention_2, ...), not eager."""
    return name != "eager" and name in ALL_ATTENTION_FUNCTIONS and name in ALL_MASK_ATTENTION_FUNCTIONS


def current_attention(model: nn.Module) -> str:
    return base_model(model).config._attn_implementation


@contextlib.contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[None]:
    base = base_model(model)
    previous = base.config._attn_implementation
    if previous == name:
        yield
        return
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


class Taps:
    """{attention module: function}, present only inside `attached` (see the module docstring)."""

    def __init__(self, what: str):
        self.what = what
        self._fns: WeakKeyDictionary[nn.Module, Callable] = WeakKeyDictionary()

    def get(self, module: nn.Module) -> Callable | None:
        return self._fns.get(module)

    def __len__(self) -> int:
        return len(self._fns)

    @contextlib.contextmanager
    def attached(self, fns: dict[nn.Module, Callable]) -> Iterator[None]:
        taken = [m for m in fns if m in self._fns]
        if taken:
            raise RuntimeError(f"a {self.what} is already attached to {type(taken[0]).__name__}")
        added = []
        try:
            for module, fn in fns.items():
                self._fns[module] = fn
                added.append(module)
            yield
        finally:
            for module in added:
                self._fns.pop(module, None)
