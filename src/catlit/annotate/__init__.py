"""Automated causal annotation: a few human demonstrations + an assistant model -> `important`."""
