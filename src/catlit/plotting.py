"""matplotlib, set up once for files (no display): every figure catlit writes goes through `pyplot()`."""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
