"""Plain SGD: ``w -= lr * g``. No state."""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.optim.chains import AHEAD, CHUNK, NO_META, prefetch_row, sum_chains, touch_row
from kraken.types import F32, Rows


@batch_kernel
def _sgd(w, rows, g, lr, last_seen, stamp, now, version):  # pragma: no cover - numba
    """``w[rows[i]] -= lr * g[i]``, and ``last_seen``/``stamp`` of the row unless they are
    ``NO_META``; the weights of the row ``AHEAD`` places on are prefetched (the rows are
    random reads of the arena; measured 5% faster warm, 15% with the arena out of cache)."""
    u = rows.shape[0]
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        end = min(u, (c + 1) * CHUNK)
        for i in range(c * CHUNK, end):
            if i + AHEAD < end:
                prefetch_row(w, rows[i + AHEAD])
            r = rows[i]
            for j in range(w.shape[1]):
                w[r, j] -= lr * g[i, j]
            touch_row(last_seen, stamp, r, now, version)


@register
@dataclasses.dataclass(frozen=True)
class SGD(SparseOptimizer):
    """Stochastic gradient descent; matches ``torch.optim.SGD`` without momentum."""

    lr: float = 0.01
    kind = "sgd"

    def __post_init__(self) -> None:
        _check_common(self)

    def state_width(self, dim: int) -> int:
        return 0

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _sgd(grads.size, weights, rows, grads, np.float32(self.lr), NO_META, NO_META,
             np.int32(0), np.int32(0))

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        # the summed gradients first, then the step with the metadata: measured 1.3x
        # faster than one fused pass (a step of a 64-byte row is one load and one store,
        # and a pass of its own keeps more of the chains' random reads in flight)
        sums = sum_chains(grads, first, nxt)
        _sgd(sums.size, weights, rows, sums, np.float32(self.lr), last_seen, stamp,
             np.int32(now), np.int32(version))
