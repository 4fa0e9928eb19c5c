"""catlit: Causal Attention Tuning (CAT) for HuggingFace causal LMs, on Lightning + Hydra."""

__version__ = "0.1.0"
