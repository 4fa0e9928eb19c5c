"""A console that shows what matters: progress, train/attn, results; not library advertisements.

Each filter is narrow (one message, one logger), so warnings that concern the user still show.
`CATLIT_VERBOSE=1` leaves every library's output as it is.
"""

from __future__ import annotations

import logging
import os
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_console() -> None:
    if os.environ.get("CATLIT_VERBOSE"):
        return
    # wandb's banner and its notice about an unused setting; catlit prints the run's folder itself
    os.environ.setdefault("WANDB_SILENT", "true")
    # a progress bar for every tokenizer/model save of a 0.6 MB model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # Lightning advertising a cloud logger on every run
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("💡 Tip"))
    # a deprecation inside Lightning itself, nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
