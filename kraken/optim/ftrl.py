"""FTRL-proximal (McMahan et al., 2013), the classic optimizer of CTR models.

State layout per row: ``[z (D) | n (D)]``. Per coordinate::

    sigma = (sqrt(n + g*g) - sqrt(n)) / alpha
    z += g - sigma * w;   n += g*g
    w = 0                                        if |z| <= l1
    w = -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)   otherwise

The weights are a function of ``(z, n)``, so a row's initial weights are replaced
by the first update; L1 makes many coordinates exactly zero.
"""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import check_number
from kraken.optim.base import MetadataInStep, SparseOptimizer, _check_f32_positive, register
from kraken.optim.chains import AHEAD, CHUNK, chain_sum, prefetch_group, touch_row
from kraken.types import F32, Rows


@nb.njit(cache=True, nogil=True, inline="always")
def _ftrl_row(w, s, r, g, alpha, beta, l1, l2):  # pragma: no cover - numba
    """One step of row ``r`` with its summed gradient ``g: float32[D]``."""
    d = w.shape[1]
    for j in range(d):
        gj = g[j]
        n = s[r, d + j]
        n_new = n + gj * gj
        sigma = (np.float32(math.sqrt(n_new)) - np.float32(math.sqrt(n))) / alpha
        z = s[r, j] + gj - sigma * w[r, j]
        s[r, j] = z
        s[r, d + j] = n_new
        den = (beta + np.float32(math.sqrt(n_new))) / alpha + l2
        # den is 0 only if beta, l2 and n are (n is when every gradient seen squared to
        # 0 in float32, |g| < 3e-23): no usable information yet, so w = 0, not x / 0
        if abs(z) <= l1 or den == 0:
            w[r, j] = np.float32(0.0)
        else:
            sgn = np.float32(1.0) if z > 0 else np.float32(-1.0)
            w[r, j] = -(z - sgn * l1) / den


@batch_kernel
def _ftrl(w, s, rows, g, alpha, beta, l1, l2):  # pragma: no cover - numba
    for i in nb.prange(rows.shape[0]):
        _ftrl_row(w, s, rows[i], g[i], alpha, beta, l1, l2)


@batch_kernel
def _ftrl_groups(w, s, rows, first, nxt, g, alpha, beta, l1, l2, last_seen, stamp, now,
                 version):  # pragma: no cover - numba
    u, d = rows.shape[0], w.shape[1]
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        buf = np.empty(d, dtype=np.float32)
        end = min(u, (c + 1) * CHUNK)
        for p in range(c * CHUNK, end):
            prefetch_group(g, first, rows, w, s, p + AHEAD, end)
            chain_sum(g, first, nxt, p, buf)
            _ftrl_row(w, s, rows[p], buf, alpha, beta, l1, l2)
            touch_row(last_seen, stamp, rows[p], now, version)


@register
@dataclasses.dataclass(frozen=True)
class FTRL(MetadataInStep, SparseOptimizer):
    """FTRL-proximal with L1/L2 regularisation; ``2D`` floats of state per row."""

    alpha: float = 0.05
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    kind = "ftrl"

    def __post_init__(self) -> None:
        _check_f32_positive("alpha", self.alpha)
        check_number("beta", self.beta, lo=0.0)
        check_number("l1", self.l1, lo=0.0)
        check_number("l2", self.l2, lo=0.0)

    @property
    def lr(self) -> float:
        """FTRL's learning rate is ``alpha``."""
        return self.alpha

    def state_width(self, dim: int) -> int:
        return 2 * dim

    def _args(self) -> tuple[np.float32, ...]:
        return (np.float32(self.alpha), np.float32(self.beta), np.float32(self.l1),
                np.float32(self.l2))

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        _ftrl(grads.size, weights, state, rows, grads, *self._args())

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        _ftrl_groups(grads.size, weights, state, rows, first, nxt, grads, *self._args(),
                     last_seen, stamp, np.int32(now), np.int32(version))
