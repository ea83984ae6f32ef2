"""Gradient chains: the duplicates of a row's gradient linked through the batch.

A push of ``grads: float32[N, D]`` to ``U`` distinct rows comes as ``first: int32[U]``
(the first occurrence of row ``p``) and ``nxt: int32[N]`` (the next occurrence of the same
row, -1 at the end), built by :func:`kraken.table.push.group`. The gradient of row ``p`` is
the chain's sum, added in occurrence order. Optimizers' fused steps sum a chain into a
``float32[D]`` buffer and update the row in the same parallel task, ``CHUNK`` rows per task;
in the table's push (``step_groups``) the same task writes the row's ``last_seen`` and
``stamp`` (:func:`touch_row`), and for rows wider than two cache lines it prefetches the
row ``AHEAD`` places on (:func:`prefetch_group`).

Kernels are ``nogil`` (a push can run on a background thread).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken._jit import prefetch_at as _prefetch_at
from kraken.types import F32

__all__ = ["AHEAD", "CHUNK", "NO_META", "PREFETCH_FROM", "chain_sum", "prefetch_group",
           "prefetch_row", "prefetch_rows", "sum_chains", "touch_row", "touch_rows"]

CHUNK = 256
"""Rows per task of the parallel per-row loops (each task owns one ``float32[D]`` buffer)."""

AHEAD = 8
"""Rows ahead of the one being stepped whose weights, state and first gradient a fused
step prefetches, for rows wider than :data:`PREFETCH_FROM` bytes."""

PREFETCH_FROM = 128
"""Bytes of weights and state per row above which a step prefetches rows (Adam's and
FTRL's 196 and 192 at dim 16 gained 15-25%; 64-128 byte rows measured 5-15% slower:
out-of-order execution already overlaps their one or two cache misses)."""


@nb.njit(cache=True, nogil=True, inline="always")
def prefetch_row(a, r):  # pragma: no cover - numba
    """Prefetch every cache line of row ``r`` of the 2-D C-contiguous ``a``."""
    w = a.shape[1]
    if w == 0:
        return
    step = max(1, 64 // a.itemsize)
    for c in range(0, w, step):
        _prefetch_at(a, r, c)
    _prefetch_at(a, r, w - 1)


@nb.njit(cache=True, nogil=True, inline="always")
def _wide(w, s):  # pragma: no cover - numba
    return w.shape[1] * w.itemsize + s.shape[1] * s.itemsize > PREFETCH_FROM


@nb.njit(cache=True, nogil=True, inline="always")
def prefetch_rows(w, s, rows, q, end):  # pragma: no cover - numba
    """Prefetch ``w[rows[q]]`` and ``s[rows[q]]`` if ``q < end`` and the rows are wide."""
    if q < end and _wide(w, s):
        prefetch_row(w, rows[q])
        prefetch_row(s, rows[q])


@nb.njit(cache=True, nogil=True, inline="always")
def prefetch_group(grads, first, rows, w, s, q, end):  # pragma: no cover - numba
    """Before stepping row ``p``, prefetch row ``q = p + AHEAD`` (if ``q < end``): its
    weights ``w[rows[q]]``, state ``s[rows[q]]`` and the first gradient of its chain, if
    the rows are wider than :data:`PREFETCH_FROM` bytes."""
    if q < end and _wide(w, s):
        r = rows[q]
        prefetch_row(w, r)
        prefetch_row(s, r)
        prefetch_row(grads, first[q])


NO_META = np.empty(0, dtype=np.int32)
"""``last_seen`` and ``stamp`` of a fused step that writes no metadata (``update_groups``)."""


@nb.njit(cache=True, nogil=True, inline="always")
def touch_row(last_seen, stamp, r, now, version):  # pragma: no cover - numba
    """``last_seen[r] = now; stamp[r] = version`` (``int32[R]`` columns), unless the columns
    are empty (:data:`NO_META`)."""
    if last_seen.shape[0]:
        last_seen[r] = now
        stamp[r] = version


@batch_kernel
def _touch_rows(rows, last_seen, stamp, now, version):  # pragma: no cover - numba
    for p in nb.prange(rows.shape[0]):
        touch_row(last_seen, stamp, rows[p], now, version)


def touch_rows(rows: np.ndarray, last_seen: np.ndarray, stamp: np.ndarray, now: int,
               version: int) -> None:
    """``last_seen[rows] = now; stamp[rows] = version`` (``int32[R]`` columns), in parallel
    for a large batch."""
    _touch_rows(8 * rows.shape[0], rows, last_seen, stamp, np.int32(now), np.int32(version))


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
        end = min(u, (c + 1) * CHUNK)
        for p in range(c * CHUNK, end):
            chain_sum(grads, first, nxt, p, buf)
            for j in range(d):
                out[p, j] = buf[j]


def sum_chains(grads: F32, first: np.ndarray, nxt: np.ndarray) -> F32:
    """``float32[U, D]``: the sum of each chain of ``grads: float32[N, D]`` (parallel)."""
    out = np.empty((first.shape[0], grads.shape[1]), dtype=np.float32)
    _sum_chains(out.size, grads, first, nxt, out)
    return out
