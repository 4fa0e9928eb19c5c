"""What a part of a run may add to its record: figures for metrics.json and lines under the results
table. The method and any callback that declares this contract are asked once training ends."""

from __future__ import annotations


class RunSummary:
    def summary(self) -> dict[str, float]:
        """Figures for the run's metrics.json once training ends (e.g. how often a loss term acted)."""
        return {}

    def summary_lines(self, metrics: dict[str, float]) -> list[str]:
        """Lines printed under the run's results table (`metrics`: the run's final figures)."""
        return []
