"""The hooks room: every way catlit looks inside or rewrites a model's forward pass.

- `interface`: registered attention functions, temporary attention-implementation switches, taps;
- `points`: TransformerLens-named hook points (read or rewrite activations) for tracing;
- `attention`: CAT's attention captures (per-row statistics for the Re-Attention loss);
- `eager`: full attention maps for one pass (probes, plots);
- `selection`: which layers and heads a capture looks at.
Everything is attached by a context manager and removed on exit, also after an exception: outside a
`with` block the model carries nothing of catlit's.
"""

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
