"""AUC, logloss and calibration together, as the trainer reports them."""

from __future__ import annotations

from typing import Any

import numpy as np

from kraken.errors import ConfigError
from kraken.train.metrics.auc import AUC
from kraken.train.metrics.base import Metric
from kraken.train.metrics.calibration import Calibration
from kraken.train.metrics.log_loss import LogLoss

__all__ = ["MetricSet"]


class MetricSet:
    """AUC, logloss and calibration; the surface of :class:`Metric`, except that
    ``get()`` returns ``{"samples", "auc", "logloss", "calibration"}``. ``state()``
    names arrays ``<metric>.<array>`` plus ``samples``."""

    def __init__(self, auc_bins: int = 1 << 20) -> None:
        self.metrics: dict[str, Metric] = {"auc": AUC(auc_bins), "logloss": LogLoss(),
                                           "calibration": Calibration()}
        self.samples = 0

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        for m in self.metrics.values():
            m.update(y, p)
        self.samples += int(y.shape[0])

    def get(self) -> dict[str, float]:
        return {"samples": self.samples, **{k: m.get() for k, m in self.metrics.items()}}

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset()
        self.samples = 0

    def state(self) -> dict[str, np.ndarray]:
        out = {"samples": np.array([self.samples])}
        for name, m in self.metrics.items():
            out.update({f"{name}.{k}": v for k, v in m.state().items()})
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.samples = int(state["samples"][0])
        for name, m in self.metrics.items():
            m.load_state({k.split(".", 1)[1]: v for k, v in state.items()
                          if k.startswith(name + ".")})

    def merge(self, other: Any) -> None:
        if not isinstance(other, MetricSet):
            raise ConfigError(f"cannot merge {type(other).__name__} into MetricSet")
        for name, m in self.metrics.items():
            m.merge(other.metrics[name])
        self.samples += other.samples
