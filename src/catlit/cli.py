"""Command-line entry points (`catlit-train`, `catlit-trace`; the root `train.py` / `trace.py` call these)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import catlit.resolvers  # noqa: F401  (registers the resolvers conf/ uses)


def config_dir() -> str:
    """`conf/` of a source checkout, else the copy packaged inside an installed wheel."""
    override = os.environ.get("CATLIT_CONFIG_DIR")
    if override:
        return str(Path(override).resolve())
    checkout = Path(__file__).resolve().parents[2] / "conf"
    return str(checkout if checkout.is_dir() else Path(__file__).resolve().parent / "conf")


@contextlib.contextmanager
def user_errors():
    """A mistake in the config or the inputs (a missing path, a bad value, a malformed row) ends the
    run with one line naming it instead of a traceback; CATLIT_TRACEBACK=1 shows the traceback."""
    try:
        yield
    except (FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as err:
        if os.environ.get("CATLIT_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def train_main() -> None:
    import hydra
    from omegaconf import DictConfig

    from catlit.console import quiet_console
    from catlit.training.run import run

    quiet_console()

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
    def _main(cfg: DictConfig) -> float | None:
        with user_errors():
            value, _ = run(cfg)
        return value

    _main()


def trace_main() -> None:
    import hydra
    from omegaconf import DictConfig

    from catlit.console import quiet_console
    from catlit.tracing.run import run

    quiet_console()

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="trace")
    def _main(cfg: DictConfig) -> float | None:
        with user_errors():
            metrics = run(cfg)
        return metrics.get("pgbct/effect_heldout")

    _main()


if __name__ == "__main__":
    sys.exit(train_main())
