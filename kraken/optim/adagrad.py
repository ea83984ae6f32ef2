"""Element-wise AdaGrad: ``s += g*g; w -= lr * g / (sqrt(s) + eps)``. State width ``D``."""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import check_number
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.optim.chains import AHEAD, CHUNK, NO_META, chain_sum, prefetch_group, touch_row
from kraken.types import F32, Rows


@nb.njit(cache=True, nogil=True, inline="always")
def _adagrad_row(w, s, r, g, lr, eps):  # pragma: no cover - numba
    """One step of row ``r`` with its summed gradient ``g: float32[D]``."""
    for j in range(w.shape[1]):
        gj = g[j]
        sj = s[r, j] + gj * gj
        s[r, j] = sj
        w[r, j] -= lr * gj / (np.float32(math.sqrt(sj)) + eps)


@batch_kernel
def _adagrad(w, s, rows, g, lr, eps):  # pragma: no cover - numba
    for i in nb.prange(rows.shape[0]):
        _adagrad_row(w, s, rows[i], g[i], lr, eps)


@batch_kernel
def _adagrad_groups(w, s, rows, first, nxt, g, lr, eps, last_seen, stamp, now,
                    version):  # pragma: no cover - numba
    u, d = rows.shape[0], w.shape[1]
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        buf = np.empty(d, dtype=np.float32)
        end = min(u, (c + 1) * CHUNK)
        for p in range(c * CHUNK, end):
            prefetch_group(g, first, rows, w, s, p + AHEAD, end)
            chain_sum(g, first, nxt, p, buf)
            _adagrad_row(w, s, rows[p], buf, lr, eps)
            touch_row(last_seen, stamp, rows[p], now, version)


@register
@dataclasses.dataclass(frozen=True)
class AdaGrad(SparseOptimizer):
    """AdaGrad with one accumulator per element; matches ``torch.optim.Adagrad``
    (``lr_decay=0``, ``weight_decay=0``)."""

    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator: float = 0.0
    kind = "adagrad"

    def __post_init__(self) -> None:
        _check_common(self)
        check_number("initial_accumulator", self.initial_accumulator, lo=0.0)

    def state_width(self, dim: int) -> int:
        return dim

    def init_state(self, state: F32) -> None:
        state[...] = self.initial_accumulator

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _adagrad(grads.size, weights, state, rows, grads, np.float32(self.lr), np.float32(self.eps))

    def update_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                      first: np.ndarray, nxt: np.ndarray) -> None:
        _adagrad_groups(grads.size, weights, state, rows, first, nxt, grads,
                        np.float32(self.lr), np.float32(self.eps), NO_META, NO_META,
                        np.int32(0), np.int32(0))
