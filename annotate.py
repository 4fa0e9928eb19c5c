"""Annotate causal structure: `python annotate.py input=rows.jsonl annotator=openai demos=math`."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("CATLIT_ROOT", str(ROOT))
if (ROOT / "src").is_dir():  # run from a checkout even before `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from catlit.cli import annotate_main  # noqa: E402

if __name__ == "__main__":
    annotate_main()
