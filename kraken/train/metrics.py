"""Streaming binary-classification metrics for progressive (predict-then-learn) evaluation.

Every metric has the same small surface: ``update(y, p)`` with ``y float32[B]`` in
{0, 1} and ``p float32[B]`` predicted probabilities, ``get() -> float`` (changes
nothing), ``reset()``, and ``state()`` / ``load_state()`` for checkpoints.

:class:`AUC` is computed from two histograms of predictions over ``[0, 1]``
(``bins`` equal-width bins, ties within a bin counted half), so memory is constant
on an endless stream; with the default 2**20 bins it agrees with the exact
rank-based AUC to about 1e-5.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["AUC", "Calibration", "LogLoss", "MetricSet", "exact_auc"]


def exact_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank-based AUC (ties averaged); NaN when a class is missing."""
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(p.shape[0], dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(ps, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class AUC:
    """Histogram AUC: constant memory, mergeable, accurate to ~1/bins."""

    def __init__(self, bins: int = 1 << 20) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        idx = np.clip((p.astype(np.float64) * self.bins).astype(np.int64), 0, self.bins - 1)
        pos = y > 0.5
        self.pos += np.bincount(idx[pos], minlength=self.bins)
        self.neg += np.bincount(idx[~pos], minlength=self.bins)

    def get(self) -> float:
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan
        neg_below = np.cumsum(self.neg) - self.neg
        wins = (self.pos * neg_below).sum() + 0.5 * (self.pos * self.neg).sum()
        return float(wins / (n_pos * n_neg))

    def reset(self) -> None:
        self.pos[:] = 0
        self.neg[:] = 0

    def state(self) -> dict[str, np.ndarray]:
        return {"pos": self.pos.copy(), "neg": self.neg.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.pos[:] = state["pos"]
        self.neg[:] = state["neg"]


class LogLoss:
    """Mean binary cross-entropy, with predictions clipped to ``[eps, 1 - eps]``."""

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


class Calibration:
    """Mean prediction over mean label (1.0 is perfectly calibrated on average)."""

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


class MetricSet:
    """AUC, logloss and calibration together; ``get()`` returns them as a dict."""

    def __init__(self, auc_bins: int = 1 << 20) -> None:
        self.metrics = {"auc": AUC(auc_bins), "logloss": LogLoss(), "calibration": Calibration()}
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
