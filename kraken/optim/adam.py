"""Lazy Adam: per-element first and second moments, a per-row step count.

State layout per row: ``[m (D) | v (D) | step (1)]``, width ``2D + 1``. A row's
moments and bias correction advance only when the row receives a gradient
(the "lazy" variant); with every row updated every step this is exactly
``torch.optim.SparseAdam``::

    m += (1 - b1) * (g - m);  v += (1 - b2) * (g*g - v);  t += 1
    w -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)

(with ``b1 = 0`` or ``b2 = 0`` the moment is set to ``g`` or ``g*g`` exactly, where the
interpolation's rounding could leave ``v = 0`` beside ``m != 0`` and a step of ``m / eps``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import check_number
from kraken.optim.base import MetadataInStep, SparseOptimizer, _check_common, register
from kraken.optim.chains import AHEAD, CHUNK, chain_sum, prefetch_group, touch_row
from kraken.types import F32, Rows


@nb.njit(cache=True, nogil=True, inline="always")
def _adam_row(w, s, r, g, step, c1, c2, eps):  # pragma: no cover - numba
    """Moments and weights of row ``r`` with its summed gradient ``g: float32[D]`` and the
    bias-corrected step size ``step`` of its new step count (already written)."""
    # c1 = float32(1 - b1), c2 = float32(1 - b2), rounded once from float64 as torch does:
    # 1 - float32(0.9999) is off by 1.7e-4 relative.
    d = w.shape[1]
    one = np.float32(1.0)
    for j in range(d):
        gj = g[j]
        # beta = 0 keeps only the new value, exactly: the interpolation would round
        # g*g - v to -v when g*g is below v's last bit, leaving v = 0 beside m != 0
        m = gj if c1 == one else s[r, j] + (gj - s[r, j]) * c1
        s[r, j] = m
        v = gj * gj if c2 == one else s[r, d + j] + (gj * gj - s[r, d + j]) * c2
        s[r, d + j] = v
        w[r, j] -= step * (m / (np.float32(math.sqrt(v)) + eps))


@nb.njit(cache=True, nogil=True, inline="always")
def _step_size(lr, b1, b2, t):  # pragma: no cover - numba
    """``lr * sqrt(1 - b2**t) / (1 - b1**t)`` in float64 (as torch), rounded to float32."""
    tt = float(t)
    return np.float32(lr * math.sqrt(1.0 - b2**tt) / (1.0 - b1**tt))


@batch_kernel
def _adam(w, s, rows, g, lr, b1, b2, c1, c2, eps):  # pragma: no cover - numba
    d = w.shape[1]
    for i in nb.prange(rows.shape[0]):
        r = rows[i]
        t = s[r, 2 * d] + np.float32(1.0)
        s[r, 2 * d] = t
        _adam_row(w, s, r, g[i], _step_size(lr, b1, b2, t), c1, c2, eps)


_MEMO = 64
"""Step sizes remembered per task, by step count modulo ``_MEMO`` (exact: the key is kept)."""


@batch_kernel
def _adam_groups(w, s, rows, first, nxt, g, lr, b1, b2, c1, c2, eps, last_seen, stamp, now,
                 version):  # pragma: no cover - numba
    # Two float64 powers per row cost more than the rest of the step: each task remembers
    # the step sizes of the counts it met (rows of a batch share few distinct counts).
    u, d = rows.shape[0], w.shape[1]
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        buf = np.empty(d, dtype=np.float32)
        memo_t = np.full(_MEMO, np.float32(-1.0), dtype=np.float32)
        memo_step = np.empty(_MEMO, dtype=np.float32)
        end = min(u, (c + 1) * CHUNK)
        for p in range(c * CHUNK, end):
            prefetch_group(g, first, rows, w, s, p + AHEAD, end)
            chain_sum(g, first, nxt, p, buf)
            r = rows[p]
            t = s[r, 2 * d] + np.float32(1.0)
            s[r, 2 * d] = t
            k = np.int64(t) & (_MEMO - 1)
            if memo_t[k] != t:
                memo_t[k] = t
                memo_step[k] = _step_size(lr, b1, b2, t)
            _adam_row(w, s, r, buf, memo_step[k], c1, c2, eps)
            touch_row(last_seen, stamp, r, now, version)


@register
@dataclasses.dataclass(frozen=True)
class Adam(MetadataInStep, SparseOptimizer):
    """Lazy Adam over rows; the memory-hungry baseline (``2D + 1`` floats per row)."""

    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    kind = "adam"

    def __post_init__(self) -> None:
        _check_common(self)
        check_number("beta1", self.beta1, lo=0.0, hi=1.0, hi_open=True)
        check_number("beta2", self.beta2, lo=0.0, hi=1.0, hi_open=True)

    def state_width(self, dim: int) -> int:
        return 2 * dim + 1

    def _args(self) -> tuple[Any, ...]:
        return (float(self.lr), float(self.beta1), float(self.beta2),
                np.float32(1.0 - self.beta1), np.float32(1.0 - self.beta2), np.float32(self.eps))

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _adam(grads.size, weights, state, rows, grads, *self._args())

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        _adam_groups(grads.size, weights, state, rows, first, nxt, grads, *self._args(),
                     last_seen, stamp, np.int32(now), np.int32(version))
