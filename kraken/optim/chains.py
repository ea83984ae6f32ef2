"""Gradient chains: the duplicates of a row's gradient linked through the batch.

A push of ``grads: float32[N, D]`` to ``U`` distinct rows comes as ``first: int32[U]``
(the first occurrence of row ``p``) and ``nxt: int32[N]`` (the next occurrence of the same
row, -1 at the end), built by :func:`kraken.table.push.group`. The gradient of row ``p`` is
the chain's sum, added in occurrence order. Optimizers' fused steps sum a chain into a
``float32[D]`` buffer and update the row in the same parallel task, ``CHUNK`` rows per task.

Kernels are ``nogil`` (a push can run on a background thread).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.types import F32

__all__ = ["CHUNK", "chain_sum", "sum_chains"]

CHUNK = 256
"""Rows per task of the parallel per-row loops (each task owns one ``float32[D]`` buffer)."""


@nb.njit(cache=True, nogil=True, inline="always")
def chain_sum(grads, first, nxt, p, buf):  # pragma: no cover - numba
    """``buf[:] =`` the sum of chain ``p`` of ``grads: float32[N, D]``, in chain order."""
    d = grads.shape[1]
    i = first[p]
    for j in range(d):
        buf[j] = grads[i, j]
    i = nxt[i]
    while i >= 0:
        for j in range(d):
            buf[j] += grads[i, j]
        i = nxt[i]


@batch_kernel
def _sum_chains(grads, first, nxt, out):  # pragma: no cover - numba
    u, d = out.shape
    for c in nb.prange((u + CHUNK - 1) // CHUNK):
        buf = np.empty(d, dtype=np.float32)
        for p in range(c * CHUNK, min(u, (c + 1) * CHUNK)):
            chain_sum(grads, first, nxt, p, buf)
            for j in range(d):
                out[p, j] = buf[j]


def sum_chains(grads: F32, first: np.ndarray, nxt: np.ndarray) -> F32:
    """``float32[U, D]``: the sum of each chain of ``grads: float32[N, D]`` (parallel)."""
    out = np.empty((first.shape[0], grads.shape[1]), dtype=np.float32)
    _sum_chains(out.size, grads, first, nxt, out)
    return out
