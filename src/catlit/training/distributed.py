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

from catlit.models.architectures import decoder_layer_classes


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


def fsdp_strategy(
    model,
    sharding_strategy: str = "FULL_SHARD",
    activation_checkpointing: bool = True,
    cpu_offload: bool = False,
    layer_classes: list[str] | None = None,
    **kwargs,
):
    """Lightning's FSDPStrategy, auto-wrapped on the model's decoder layers (the architecture table's).

    Activation checkpointing uses Lightning's non-reentrant wrapper (a reentrant one would give the
    Re-Attention statistics no gradient); `use_orig_params` keeps LoRA's frozen and trainable
    parameters in the same flat groups.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    if layer_classes:
        classes = {type(m) for m in model.modules() if type(m).__name__ in set(layer_classes)}
    else:
        classes = decoder_layer_classes(model)
    return FSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        cpu_offload=cpu_offload,
        use_orig_params=True,
        **kwargs,
    )


def build_strategy(strategy_cfg, model):
    """A `trainer.strategy` given as a name stays a name; a `_target_` node is instantiated, and a
    factory that needs the model (like `fsdp_strategy`, `_partial_: true`) is called with it."""
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import Strategy
    from omegaconf import DictConfig

    if not isinstance(strategy_cfg, DictConfig):
        return strategy_cfg
    strategy = instantiate(strategy_cfg)
    return strategy if isinstance(strategy, Strategy) else strategy(model)


def fully_shard_model(model, mesh) -> None:
    """FSDP2: shard every decoder layer, then the rest (embeddings, norm, head) as one root unit.

    Called from LightningModule.configure_model under Lightning's ModelParallelStrategy, which runs
    on GPUs and also on CPU processes (gloo); idempotent, since Lightning calls it for every stage.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    classes = tuple(decoder_layer_classes(model))
    for module in model.modules():
        if isinstance(module, classes):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def full_state_dict(model) -> dict | None:
    """The whole model's weights on every rank (gathered from shards under FSDP2), or None unsharded."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
