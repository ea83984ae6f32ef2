"""Kernels of the training pull (``SparseTable.lookup(keys, train=True)``).

The pull runs over a batch of ``N`` keys (duplicates allowed) in these passes::

    1. HashIndex.claim      one probe per key: present -> row, absent -> its empty slot is
                            claimed (pending code -2 - u); duplicates meet in that slot, so
                            the U new keys come out distinct, in first-occurrence order,
                            with their counts (index.py); each present key's access is
                            recorded there (last_seen, stamp, count: index.RowTouch)
    2. admission            policy.decide over the U new keys; the admitted ones that fit
                            get arena rows; the initializer writes their weights straight
                            into the arena (init.py)
    3. HashIndex.settle     pending keys get their rows or leave the index
    4. resolve_gather       per key (parallel): pending code -> row (or -1), and the row's
                            weights into the output (default for -1); resolve_gather16
                            decodes fp16/bf16 rows on the way (bit for bit codec.decode)
    5. new rows' accesses   per admitted new key: last_seen, stamp, count += occurrences

Per key the index is probed once (plus once more for a new key that is not admitted). While
most new keys are turned away (the last pull gave more than half of them no row: a count-min
policy's first sightings, a full table), ``SparseTable._pull`` finds keys without claiming,
deduplicates the absent ones beside the index (``kernels.unique_inverse``) and inserts the
admitted ones: claims would mostly be released again (that way ``kernels.touch`` records
the accesses after pass 4). Both ways give the same rows and metadata.

Recording accesses inside the claims costs 0.3 ms a 100k batch on a 4M-row table against
0.9 ms for a touch pass of its own (the stores miss, but the probes that follow do not wait
for them). Measured and not kept: a parallel find of every key first, claiming only the
absent ones (no faster on 2 threads, 1.2x the CPU time), and the metadata writes inside the
parallel pass 4 (see :func:`resolve_gather`).
"""

from __future__ import annotations

import numba as nb

from kraken._jit import batch_kernel
from kraken.table.kernels import ROW_PREFETCH, decode_row, prefetch_row

__all__ = ["consecutive", "resolve_gather", "resolve_gather16"]


@batch_kernel
def resolve_gather(rows, row_of, weights, default, out):  # pragma: no cover - numba
    """In place ``rows[n] = row_of[-2 - rows[n]]`` where ``rows[n] <= -2`` (pending codes of
    :meth:`HashIndex.claim`), then ``out[n] = weights[rows[n]]`` (float32 storage; ``default``
    where the row is -1). ``rows, row_of: int64``, ``out: float32[N, D]``.

    The access metadata is written by the serial claims (or ``kernels.touch``): writing it
    here, from both threads, measured 0.6x on a 4M-row table (a hot row's cache line moves
    between the cores)."""
    d = weights.shape[1]
    flat = weights.reshape(-1)
    n_rows = rows.shape[0]
    for n in nb.prange(n_rows):
        if n + ROW_PREFETCH < n_rows:  # a row further on (resolved or not: the same row)
            ahead = rows[n + ROW_PREFETCH]
            prefetch_row(flat, d, row_of[-2 - ahead] if ahead < -1 else ahead)
        r = rows[n]
        if r < -1:
            r = row_of[-2 - r]
            rows[n] = r
        if r >= 0:
            for j in range(d):
                out[n, j] = weights[r, j]
        else:
            for j in range(d):
                out[n, j] = default


@batch_kernel
def resolve_gather16(rows, row_of, weights, bf16, default, out):  # pragma: no cover - numba
    """:func:`resolve_gather` for 16-bit storage: ``weights: uint16[R, D]`` (fp16 bits, or
    bf16 when ``bf16``) decoded into ``out: uint32[N, D]``, the float32 bits of the output,
    exactly as :func:`kraken.table.codec.decode` decodes; ``default`` is a float32's bits."""
    d = weights.shape[1]
    flat = weights.reshape(-1)
    n_rows = rows.shape[0]
    for n in nb.prange(n_rows):
        if n + ROW_PREFETCH < n_rows:
            ahead = rows[n + ROW_PREFETCH]
            prefetch_row(flat, d, row_of[-2 - ahead] if ahead < -1 else ahead)
        r = rows[n]
        if r < -1:
            r = row_of[-2 - r]
            rows[n] = r
        if r >= 0:
            decode_row(weights, r, bf16, out, n)
        else:
            for j in range(d):
                out[n, j] = default


@nb.njit(cache=True, nogil=True)
def consecutive(rows):  # pragma: no cover - numba
    """Whether ``rows: int64[U]`` (U >= 1) is ``rows[0], rows[0] + 1, ...`` (rows handed out
    from the arena's never-used tail): then columns can be written as slices."""
    for i in range(1, rows.shape[0]):
        if rows[i] != rows[i - 1] + 1:
            return False
    return True
