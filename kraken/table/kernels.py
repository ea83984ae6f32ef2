"""Batch kernels the table composes: dedupe, gradient summing, access stamping, gather.

All run in numba over whole batches; none allocates per key in Python.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.table.index import _probe, fmix64


@nb.njit(cache=True, nogil=True)
def _pow2_at_least(n):  # pragma: no cover - numba
    c = 16
    while c < n:
        c *= 2
    return c


@nb.njit(cache=True, nogil=True)
def unique_counts(keys):  # pragma: no cover - numba
    """Distinct ``keys`` in first-occurrence order with their counts: ``(int64[U], int64[U])``."""
    uniq, inverse = unique_inverse(keys)
    counts = np.zeros(uniq.shape[0], dtype=np.int64)
    for i in range(inverse.shape[0]):
        counts[inverse[i]] += 1
    return uniq, counts


@nb.njit(cache=True, nogil=True)
def sum_by_row(rows, grads):  # pragma: no cover - numba
    """Sum ``grads: f32[N, D]`` of equal ``rows`` (rows < 0 dropped), in occurrence order.

    Returns ``(urows int64[U], ugrads float32[U, D])``.
    """
    n, d = grads.shape
    cap = _pow2_at_least(2 * n)
    mask = cap - 1
    slot_row = np.empty(cap, dtype=np.int64)
    slot_pos = np.full(cap, -1, dtype=np.int64)
    urows = np.empty(n, dtype=np.int64)
    ug = np.zeros((n, d), dtype=np.float32)
    u = 0
    for i in range(n):
        r = rows[i]
        if r < 0:
            continue
        s = np.int64(fmix64(r) & np.uint64(mask))
        while slot_pos[s] >= 0 and slot_row[s] != r:
            s = (s + 1) & mask
        if slot_pos[s] < 0:
            slot_row[s] = r
            slot_pos[s] = u
            urows[u] = r
            u += 1
        p = slot_pos[s]
        for j in range(d):
            ug[p, j] += grads[i, j]
    return urows[:u], ug[:u]


@nb.njit(cache=True, nogil=True)
def touch(rows, last_seen, count, now):  # pragma: no cover - numba
    """Record one access per occurrence: ``last_seen = now``, ``count += 1`` (rows < 0 skipped)."""
    for i in range(rows.shape[0]):
        r = rows[i]
        if r >= 0:
            last_seen[r] = now
            count[r] += np.float32(1.0)


@batch_kernel
def find_gather(skeys, srows, mask, keys, weights, default, out):  # pragma: no cover - numba
    """Fused probe + row copy for float32 storage; absent keys read ``default``."""
    d = weights.shape[1]
    for n in nb.prange(keys.shape[0]):
        s = _probe(skeys, srows, mask, keys[n])
        if s >= 0:
            r = srows[s]
            for j in range(d):
                out[n, j] = weights[r, j]
        else:
            for j in range(d):
                out[n, j] = default


@batch_kernel
def gather(rows, weights, default, out):  # pragma: no cover - numba
    """``out[n] = weights[rows[n]]`` (float32 storage), ``default`` where ``rows[n] < 0``."""
    d = weights.shape[1]
    for n in nb.prange(rows.shape[0]):
        r = rows[n]
        if r >= 0:
            for j in range(d):
                out[n, j] = weights[r, j]
        else:
            for j in range(d):
                out[n, j] = default


@nb.njit(cache=True, nogil=True)
def unique_inverse(keys):  # pragma: no cover - numba
    """Distinct ``keys`` in first-occurrence order and each key's position among them.

    Returns ``(uniq int64[U], inverse int64[N])`` with ``uniq[inverse] == keys``; O(N).
    """
    n = keys.shape[0]
    cap = _pow2_at_least(2 * n)
    mask = cap - 1
    slot_key = np.empty(cap, dtype=np.int64)
    slot_pos = np.full(cap, -1, dtype=np.int64)
    uniq = np.empty(n, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int64)
    u = 0
    for i in range(n):
        k = keys[i]
        s = np.int64(fmix64(k) & np.uint64(mask))
        while slot_pos[s] >= 0 and slot_key[s] != k:
            s = (s + 1) & mask
        if slot_pos[s] < 0:
            slot_key[s] = k
            slot_pos[s] = u
            uniq[u] = k
            u += 1
        inverse[i] = slot_pos[s]
    return uniq[:u], inverse
