"""Training objectives: what a method adds on top of the answer-only cross-entropy."""

from catlit.methods.base import Baseline, Method
from catlit.methods.cat import CausalAttentionTuning

__all__ = ["Baseline", "CausalAttentionTuning", "Method"]
