"""Element-wise AdaGrad: ``s += g*g; w -= lr * g / (sqrt(s) + eps)``. State width ``D``."""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import check_number
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.types import F32, Rows


@batch_kernel
def _adagrad(w, s, rows, g, lr, eps):  # pragma: no cover - numba
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        for j in range(w.shape[1]):
            gj = g[i, j]
            sj = s[r, j] + gj * gj
            s[r, j] = sj
            w[r, j] -= lr * gj / (np.float32(math.sqrt(sj)) + eps)


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
