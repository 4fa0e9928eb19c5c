"""Training objectives: what a method adds on top of the answer-only cross-entropy (see `base`)."""

from catlit.methods.base import Capabilities, Method, MethodOutput
from catlit.methods.cat import CausalAttentionTuning
from catlit.methods.finetune import Baseline

__all__ = ["Baseline", "Capabilities", "CausalAttentionTuning", "Method", "MethodOutput"]
