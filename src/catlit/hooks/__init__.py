"""Ways to observe a model's internals during the forward pass (attention statistics first)."""

from catlit.hooks.attention import EagerAttentionCapture, RowAttentionCapture, make_capture
from catlit.hooks.row_stats import RowStats, row_stats
from catlit.hooks.selection import LayerHeadSelection

__all__ = [
    "EagerAttentionCapture",
    "LayerHeadSelection",
    "RowAttentionCapture",
    "RowStats",
    "make_capture",
    "row_stats",
]
