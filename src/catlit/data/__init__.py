"""Examples, their sources (generators, JSONL files), tokenisation with causal spans, the DataModule."""

from catlit.data.example import CausalLink, Example

__all__ = ["CausalLink", "Example"]
