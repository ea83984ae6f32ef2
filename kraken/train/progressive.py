"""Progressive (predict-then-learn) evaluation: every batch is scored before it is learned.

Two metric sets: ``cumulative`` over the whole run (checkpointed, so a resumed run
continues it) and ``window`` over the latest ``window`` samples (restarted after
each window record; coarser AUC histogram, as windows are small).
"""

from __future__ import annotations

import numpy as np

from kraken.train.metrics import MetricSet

__all__ = ["ProgressiveEvaluation"]


class ProgressiveEvaluation:
    """Cumulative and windowed metrics of predictions made before learning."""

    def __init__(self, window: int, *, window_auc_bins: int = 1 << 16) -> None:
        self.window_size = window
        self.cumulative = MetricSet()
        self.window = MetricSet(auc_bins=window_auc_bins)

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        """Record predictions ``p float32[B]`` of labels ``y float32[B]``."""
        self.cumulative.update(y, p)
        self.window.update(y, p)

    def window_full(self) -> bool:
        return self.window.samples >= self.window_size

    def next_window(self) -> None:
        self.window.reset()

    def state(self) -> dict[str, np.ndarray]:
        """What a checkpoint keeps: the cumulative metrics."""
        return self.cumulative.state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.cumulative.load_state(state)
