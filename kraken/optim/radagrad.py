"""RAdaGrad, the row-wise RMSProp-style optimizer of the Kraken paper.

One float32 second moment per row, decayed exponentially::

    v = decay * v + (1 - decay) * mean(g * g)
    w -= lr * g / (sqrt(v) + eps)

The paper's artifact declared this row-wise but still allocated a state tensor
the size of the embedding table; here the state really is one float per row.
"""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import check_fraction, check_number
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.types import F32, Rows


@batch_kernel
def _radagrad(w, s, rows, g, lr, eps, decay, one_minus_decay):  # pragma: no cover - numba
    # one_minus_decay is float32(1 - decay) rounded once from float64:
    # 1 - float32(0.9999) would be off by 1.7e-4 relative.
    d = w.shape[1]
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        acc = np.float32(0.0)
        for j in range(d):
            acc += g[i, j] * g[i, j]
        v = decay * s[r, 0] + one_minus_decay * (acc / np.float32(d))
        s[r, 0] = v
        scale = lr / (np.float32(math.sqrt(v)) + eps)
        for j in range(d):
            w[r, j] -= scale * g[i, j]


@register
@dataclasses.dataclass(frozen=True)
class RAdaGrad(SparseOptimizer):
    """Row-wise RMSProp (decay 0.9999 by default) with one float32 per row."""

    lr: float = 0.01
    eps: float = 1e-8
    decay: float = 0.9999
    initial_accumulator: float = 0.0
    kind = "radagrad"

    def __post_init__(self) -> None:
        _check_common(self)
        check_fraction("decay", self.decay)
        check_number("initial_accumulator", self.initial_accumulator, lo=0.0)

    def state_width(self, dim: int) -> int:
        return 1

    def init_state(self, state: F32) -> None:
        state[...] = self.initial_accumulator

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _radagrad(grads.size, weights, state, rows, grads, np.float32(self.lr),
                  np.float32(self.eps),
                  np.float32(self.decay), np.float32(1.0 - self.decay))
