"""Summarise sweeps: `python report.py outputs/multiruns/stg_evidence` (see catlit.report)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if (ROOT / "src").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

from catlit.report import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
