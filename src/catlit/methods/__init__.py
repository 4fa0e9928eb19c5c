"""Training objectives: what a method adds on top of the answer-only cross-entropy (see `base`)."""

from catlit.methods.base import Baseline, Capabilities, Method, MethodOutput
from catlit.methods.cat import CausalAttentionTuning

__all__ = ["Baseline", "Capabilities", "CausalAttentionTuning", "Method", "MethodOutput"]
