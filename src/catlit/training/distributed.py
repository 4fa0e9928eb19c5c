"""Making Lightning's multi-process DDP safe inside a Hydra multirun.

Lightning starts ranks > 0 by re-running the script with `sys.argv[1:]` plus
`hydra.run.dir=<HydraConfig.run.dir>`. In a multirun those arguments still hold `-m` and the sweep
lists, so every child would start a whole sweep of its own, and `run.dir` is not the job's
directory. For the duration of one job we hand Lightning the job's own overrides and directory, so
each child joins exactly this job in single-run mode. The launcher also leaves LOCAL_RANK,
MASTER_PORT, ... in this process's environment; the next job would read them as "launched
externally" and wait forever for ranks nobody starts, so the environment is restored after each job.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def hydra_job_argv() -> Iterator[None]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import read_write
    except ImportError:  # pragma: no cover - hydra is a dependency
        yield
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_dir, saved_env = sys.argv[:], hydra_cfg.run.dir, dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = saved_dir


def destroy_process_group() -> None:
    """Close this job's process group so the next job of a multirun can start its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
