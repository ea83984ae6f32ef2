"""Mean binary cross-entropy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kraken.train.metrics.base import Metric

__all__ = ["LogLoss"]


class LogLoss(Metric):
    """Mean binary cross-entropy (nats), with predictions clipped to ``[eps, 1 - eps]``."""

    bigger_is_better = False

    def __init__(self, eps: float = 1e-7) -> None:
        self.eps = eps
        self.total, self.n = 0.0, 0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        q = np.clip(p.astype(np.float64), self.eps, 1 - self.eps)
        self.total += float(-(y * np.log(q) + (1 - y) * np.log1p(-q)).sum())
        self.n += int(y.shape[0])

    def get(self) -> float:
        return self.total / self.n if self.n else math.nan

    def reset(self) -> None:
        self.total, self.n = 0.0, 0

    def state(self) -> dict[str, np.ndarray]:
        return {"total": np.array([self.total]), "n": np.array([self.n])}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.total, self.n = float(state["total"][0]), int(state["n"][0])

    def merge(self, other: Any) -> None:
        self._check_mergeable(other, eps=self.eps)
        self.total += other.total
        self.n += other.n
