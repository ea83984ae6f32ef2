"""Batch kernels the table composes: dedupe, access stamping, gather (float32 and 16-bit
storage; gradient summing lives in :mod:`kraken.table.push`).

All run in numba over whole batches; none allocates per key in Python.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.table.index import _find, fmix64, prefetch


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


ROW_PREFETCH = 32
"""Rows ahead of the current one whose weights a gather prefetches (8, 16, 32 measured
1.05x, 1.03-1.10x, 1.03-1.16x over none on a 4M-row table of dim 16)."""


@nb.njit(cache=True, nogil=True)
def touch(rows, last_seen, count, now, stamp, version):  # pragma: no cover - numba
    """Record one access per occurrence: ``last_seen = now``, ``count += 1`` and
    ``stamp = version`` (the row changed: its metadata did); rows < 0 skipped.

    A zero-stride ``count`` (a table that keeps no access count) is left alone. Serial (a
    row's duplicates add up in ``count``), prefetching the columns of the row
    ``ROW_PREFETCH`` occurrences ahead (measured 1.4-1.8x over none on a 4M-row table)."""
    counting = count.strides[0] != 0
    n_rows = rows.shape[0]
    for i in range(n_rows):
        if i + ROW_PREFETCH < n_rows:
            ahead = rows[i + ROW_PREFETCH]
            if ahead >= 0:
                prefetch(last_seen, ahead)
                prefetch(stamp, ahead)
                if counting:
                    prefetch(count, ahead)
        r = rows[i]
        if r >= 0:
            last_seen[r] = now
            stamp[r] = version
            if counting:
                count[r] += np.float32(1.0)


def find_gather(work, skeys, srows, mask, keys, weights, default, out):
    """Probe + row copy for float32 storage; absent keys read ``default``.

    Called like a ``batch_kernel`` (``work`` first). Two passes, all probes and then all
    copies: in one fused loop each row copy waits on its probe's cache misses, which
    measured 1.15-1.4x slower on 0.1M-10M-key tables (see BENCHMARKS.md), and a loop over
    blocks of 128-2048 keys (probe the block, prefetching its rows, then copy it) measured
    0.8-0.9x of two passes whose copy pass prefetches ``ROW_PREFETCH`` rows ahead.
    """
    rows = np.empty(keys.shape[0], dtype=np.int64)
    _find(work, skeys, srows, mask, keys, rows)
    gather(work, rows, weights, default, out)


def find_gather16(work, skeys, srows, mask, keys, weights, bf16, default, out):
    """:func:`find_gather` for 16-bit storage (``weights: uint16[R, D]``, ``out: uint32[N, D]``
    float32 bits, ``default`` a float32's bits; see :func:`gather16`)."""
    rows = np.empty(keys.shape[0], dtype=np.int64)
    _find(work, skeys, srows, mask, keys, rows)
    gather16(work, rows, weights, bf16, default, out)


@nb.njit(cache=True, nogil=True)
def prefetch_row(flat, d, r):  # pragma: no cover - numba
    """Prefetch the cache lines of row ``r`` of a C-contiguous ``[R, d]`` array given as its
    flat view ``flat`` (hoisted out of the loop; nothing for ``r < 0``)."""
    if r >= 0:
        for j in range(0, d, 16):
            prefetch(flat, r * d + j)


@batch_kernel
def gather(rows, weights, default, out):  # pragma: no cover - numba
    """``out[n] = weights[rows[n]]`` (float32 storage), ``default`` where ``rows[n] < 0``."""
    d = weights.shape[1]
    flat = weights.reshape(-1)
    n_rows = rows.shape[0]
    for n in nb.prange(n_rows):
        if n + ROW_PREFETCH < n_rows:
            prefetch_row(flat, d, rows[n + ROW_PREFETCH])
        r = rows[n]
        if r >= 0:
            for j in range(d):
                out[n, j] = weights[r, j]
        else:
            for j in range(d):
                out[n, j] = default


@nb.njit(cache=True, nogil=True, inline="always")
def half_bits(h):  # pragma: no cover - numba
    """The float32 bits (uint32) of the IEEE half whose bits are ``h`` (uint16): exact for
    every value, subnormals normalised, inf and NaN (payload kept) as numpy converts them."""
    x = np.uint32(h)
    sign = (x & np.uint32(0x8000)) << np.uint32(16)
    e = (x >> np.uint32(10)) & np.uint32(0x1F)
    m = x & np.uint32(0x3FF)
    if e == np.uint32(0x1F):  # inf, NaN
        return sign | np.uint32(0x7F800000) | (m << np.uint32(13))
    if e == np.uint32(0):
        if m == np.uint32(0):
            return sign
        e = np.uint32(113)  # subnormal m * 2**-24: shift the leading bit up to bit 10
        while (m & np.uint32(0x400)) == np.uint32(0):
            m <<= np.uint32(1)
            e -= np.uint32(1)
        return sign | (e << np.uint32(23)) | ((m & np.uint32(0x3FF)) << np.uint32(13))
    return sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))


@nb.njit(cache=True, nogil=True, inline="always")
def decode_row(weights, r, bf16, out, n):  # pragma: no cover - numba
    """``out[n] = decode(weights[r])`` as float32 bits: ``weights: uint16[R, D]`` holds fp16
    bits, or bf16 (the upper half of a float32) when ``bf16``; ``out: uint32[N, D]``."""
    d = weights.shape[1]
    if bf16:
        for j in range(d):
            out[n, j] = np.uint32(weights[r, j]) << np.uint32(16)
    else:
        for j in range(d):
            out[n, j] = half_bits(weights[r, j])


@batch_kernel
def gather16(rows, weights, bf16, default, out):  # pragma: no cover - numba
    """:func:`gather` for 16-bit storage: ``out[n] = decode(weights[rows[n]])`` into
    ``out: uint32[N, D]`` (float32 bits), ``default`` (a float32's bits) where
    ``rows[n] < 0``; ``weights: uint16[R, D]`` (see :func:`decode_row`)."""
    d = weights.shape[1]
    flat = weights.reshape(-1)
    n_rows = rows.shape[0]
    for n in nb.prange(n_rows):
        if n + ROW_PREFETCH < n_rows:
            prefetch_row(flat, d, rows[n + ROW_PREFETCH])
        r = rows[n]
        if r >= 0:
            decode_row(weights, r, bf16, out, n)
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


@nb.njit(cache=True, nogil=True)
def hash_buckets(keys, buckets):  # pragma: no cover - numba
    """The hashing trick: ``fmix64(key) % buckets`` as int64 (collisions by design)."""
    out = np.empty(keys.shape[0], dtype=np.int64)
    m = np.uint64(buckets)
    for i in range(keys.shape[0]):
        out[i] = np.int64(fmix64(keys[i]) % m)
    return out
