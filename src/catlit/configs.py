"""Where the config tree (`conf/`) is: the checkout's, a packaged copy, or `$CATLIT_CONFIG_DIR`."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> str:
    """`conf/` of a source checkout, else the copy packaged inside an installed wheel."""
    override = os.environ.get("CATLIT_CONFIG_DIR")
    if override:
        return str(Path(override).resolve())
    checkout = Path(__file__).resolve().parents[2] / "conf"
    return str(checkout if checkout.is_dir() else Path(__file__).resolve().parent / "conf")
