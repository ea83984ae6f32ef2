"""Plain SGD: ``w -= lr * g``. No state."""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.optim.base import MetadataInStep, SparseOptimizer, _check_common, register
from kraken.optim.chains import CHUNK, chain_sum, touch_row
from kraken.types import F32, Rows


@batch_kernel
def _sgd(w, rows, g, lr):  # pragma: no cover - numba
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        for j in range(w.shape[1]):
            w[r, j] -= lr * g[i, j]


@batch_kernel
def _sgd_groups(w, rows, first, nxt, g, lr, last_seen, stamp, now,
                version):  # pragma: no cover - numba
    u, d = rows.shape[0], w.shape[1]
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        buf = np.empty(d, dtype=np.float32)
        for p in range(c * CHUNK, min(u, (c + 1) * CHUNK)):  # 64-byte rows: no prefetch
            chain_sum(g, first, nxt, p, buf)
            r = rows[p]
            for j in range(d):
                w[r, j] -= lr * buf[j]
            touch_row(last_seen, stamp, r, now, version)


@register
@dataclasses.dataclass(frozen=True)
class SGD(MetadataInStep, SparseOptimizer):
    """Stochastic gradient descent; matches ``torch.optim.SGD`` without momentum."""

    lr: float = 0.01
    kind = "sgd"

    def __post_init__(self) -> None:
        _check_common(self)

    def state_width(self, dim: int) -> int:
        return 0

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _sgd(grads.size, weights, rows, grads, np.float32(self.lr))

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        _sgd_groups(grads.size, weights, rows, first, nxt, grads, np.float32(self.lr),
                    last_seen, stamp, np.int32(now), np.int32(version))
