"""catlit: inject causal knowledge into HuggingFace causal language models and check, out of
distribution, that it worked. Causal Attention Tuning (CAT: task loss + the Re-Attention loss on
annotated causes), multi-component causal tracing (PGB-CT against its baselines) and Independent Causal
Language Models (ICLM: routed LoRA modules beside an invariant one), composed by Hydra and trained by
Lightning."""

__version__ = "0.1.0"
