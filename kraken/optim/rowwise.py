"""The row-wise accumulator step shared by :class:`RowWiseAdaGrad` and :class:`RAdaGrad`.

One float32 accumulator per row (``state[:, 0]``) from the mean squared gradient::

    s = keep * s + add * mean(g * g)
    w -= lr * g / (sqrt(s) + eps)

RowWiseAdaGrad is ``keep = add = 1`` (a plain sum; multiplying by 1.0 is exact, so the
result is bit for bit the sum); RAdaGrad is ``keep = decay, add = 1 - decay``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.types import F32, Rows

__all__ = ["rowwise_step"]


@batch_kernel
def _rowwise(w, s, rows, g, lr, eps, keep, add):  # pragma: no cover - numba
    d = w.shape[1]
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        acc = np.float32(0.0)
        for j in range(d):
            acc += g[i, j] * g[i, j]
        v = keep * s[r, 0] + add * (acc / np.float32(d))
        s[r, 0] = v
        scale = lr / (np.float32(math.sqrt(v)) + eps)
        for j in range(d):
            w[r, j] -= scale * g[i, j]


def rowwise_step(weights: F32, state: F32, rows: Rows, grads: F32, lr: float, eps: float,
                 keep: float, add: float) -> None:
    """One step on ``weights[rows]: float32[U, D]`` and ``state[rows, 0]`` with
    ``grads: float32[U, D]``, in place; ``lr, eps, keep, add`` are rounded to float32 once.

    ``keep`` and ``add`` are rounded separately, so RAdaGrad passes ``add = 1 - decay``
    computed in float64 (``1 - float32(0.9999)`` would be off by 1.7e-4 relative).
    """
    _rowwise(grads.size, weights, state, rows, grads, np.float32(lr), np.float32(eps),
             np.float32(keep), np.float32(add))
