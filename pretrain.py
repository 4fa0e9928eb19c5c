"""Pretrain catlit's base once per config: `python pretrain.py [base.steps=...]` (Hydra overrides)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CATLIT_ROOT", str(ROOT))
if (ROOT / "src").is_dir():  # run from a checkout even before `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from catlit.cli import pretrain_main  # noqa: E402

if __name__ == "__main__":
    pretrain_main()
