"""Calibration: mean prediction over mean label."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kraken.train.metrics.base import Metric

__all__ = ["Calibration"]


class Calibration(Metric):
    """Sum of predictions over sum of labels (1.0 is perfectly calibrated on average;
    NaN before the first positive). Closer to 1 is better, so neither direction is."""

    bigger_is_better = False

    def __init__(self) -> None:
        self.sum_p, self.sum_y, self.n = 0.0, 0.0, 0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        self.sum_p += float(p.astype(np.float64).sum())
        self.sum_y += float(y.astype(np.float64).sum())
        self.n += int(y.shape[0])

    def get(self) -> float:
        return self.sum_p / self.sum_y if self.sum_y else math.nan

    def reset(self) -> None:
        self.sum_p, self.sum_y, self.n = 0.0, 0.0, 0

    def state(self) -> dict[str, np.ndarray]:
        return {"v": np.array([self.sum_p, self.sum_y, float(self.n)])}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.sum_p, self.sum_y, n = state["v"].tolist()
        self.n = int(n)

    def merge(self, other: Any) -> None:
        self._check_mergeable(other)
        self.sum_p += other.sum_p
        self.sum_y += other.sum_y
        self.n += other.n
