"""Answer extraction and scoring per task."""

from catlit.eval.scoring import SCORERS, get_scorer

__all__ = ["SCORERS", "get_scorer"]
