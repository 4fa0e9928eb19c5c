"""catlit's pretrained embedded base: a small Llama pretrained on a broad synthetic corpus without
spurious correlations (`python pretrain.py`, `model=base`)."""
