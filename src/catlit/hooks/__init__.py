"""Ways to observe a model's internals during the forward pass (attention statistics first)."""

from catlit.hooks.attention import EagerAttentionCapture, make_capture

__all__ = ["EagerAttentionCapture", "make_capture"]
