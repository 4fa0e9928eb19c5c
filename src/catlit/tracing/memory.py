"""Peak memory of a block of work, for the cost columns of traces and the planted suite."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
import time
from pathlib import Path

import torch


@contextlib.contextmanager
def peak_memory(device: torch.device, interval: float = 0.002):
    """Yields a dict that holds, after the block, the peak memory rise in MB (CUDA: allocated
    tensors; CPU: resident set size, sampled every `interval` seconds by a thread). On the CPU the
    allocator's free memory is returned to the system first: memory an earlier block freed stays
    resident otherwise, and the block that reuses it showed no rise."""
    out = {"mb": 0.0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield out
        out["mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    page = 4096
    statm = Path("/proc/self/statm")
    if not statm.exists():
        yield out
        return

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    _release_free_heap()
    start, peak, stop = rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["mb"] = max(peak[0] - start, 0) / 2**20


def _release_free_heap() -> None:
    """glibc's malloc_trim(0): free heap pages back to the system (a no-op where libc has none)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """The process's own malloc_trim, looked up once (None where its C library has none)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
