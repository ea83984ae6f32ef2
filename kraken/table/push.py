"""The push path of a table: ``(keys[N], grads[N, D])`` to one gradient chain per row.

``group`` finds every key's row in the hash index, checks that every gradient is finite
and links the occurrences of each row into a chain, in two passes over the batch and
without touching the table::

    keys   [ 7,  9,  7, 42,  7]      42 has no row: dropped
    rows   [ 3,  0,  3, -1,  3]      pass 1 (parallel): index probe (``HashIndex``'s find)
    urows  [ 3,  0]                  pass 2 (serial): distinct rows, first-occurrence order
    first  [ 0,  1]                  first occurrence of urows[p]
    nxt    [ 2, -1,  4, -1, -1]      next occurrence of the same row, -1 ends a chain

Pass 2 is two tasks of one kernel, on two threads for a large batch: the serial chain
pass, and beside it the count of NaN and inf values over all of ``grads``, which streams
the gradients while the chain pass waits on its random accesses (measured 1.1x a whole
SGD push against counting them in pass 1).

The gradient of ``urows[p]`` is ``grads[first[p]] + grads[nxt[first[p]]] + ...``, added in
occurrence order (bit for bit the sum of the duplicates in the order they came).
Optimizers sum the chains and step their rows in parallel
(:meth:`~kraken.optim.base.SparseOptimizer.step_groups`), in one pass or, where measured
faster (SGD, the row-wise ones), by a ``[U, D]`` array of summed gradients first
(:func:`sum_groups`, also used for 16-bit weights). Duplicates are found by the row the
probe returned, not by hashing keys again: in a reused ``int32`` array indexed by row id
that holds each row's chain tail (when the table's rows ever handed out, ``n_rows``, need
no more scratch memory than a hash table would), else in a reused multiply-shift hash
table keyed by row. Kernels run in parallel for large batches (``kraken._jit.batch_kernel``).

Every kernel here is ``nogil``: a push can run on a background thread while Python (or
torch) keeps working on another.
"""

from __future__ import annotations

import dataclasses
import threading

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.optim.chains import sum_chains
from kraken.table.index import PREFETCH_DISTANCE, _find, prefetch
from kraken.types import F32, Rows

__all__ = ["Groups", "group", "sum_groups"]

_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: Fibonacci hashing of row ids
_EXP = np.uint32(0x7F800000)  # the exponent bits of a float32: all set for NaN and inf


@dataclasses.dataclass(frozen=True)
class Groups:
    """The rows a push touches and the chains of their gradients (see the module docstring).

    ``rows: int64[U]`` distinct rows in first-occurrence order, ``first: int32[U]``,
    ``nxt: int32[N]``, ``dropped``: keys without a row, ``nonfinite``: NaN or inf values
    in ``grads`` (over all ``N`` keys, present or not).
    """

    rows: Rows
    first: np.ndarray
    nxt: np.ndarray
    dropped: int
    nonfinite: int


def group(skeys: np.ndarray, srows: np.ndarray, mask: int, keys: np.ndarray,
          grads: F32, n_rows: int | None = None) -> Groups:
    """Rows of ``keys: int64[N]`` in the index ``(skeys, srows, mask)`` (``HashIndex.slots()``)
    and the chains of ``grads: float32[N, D]`` per row. Reads only; changes nothing.

    ``n_rows``: a bound on the index's row ids (the arena's high-water mark), or ``None``.
    With a bound whose ``int32[n_rows]`` scratch is no larger than the hash scratch of
    this batch, duplicates are linked through that direct-indexed scratch (about 15%
    faster: no hashing or probing, one random access a key less); the result is the same.
    When ``nonfinite > 0`` the chains are discarded (``rows`` is empty): the caller raises.
    """
    n = keys.shape[0]
    work = n * (grads.shape[1] + 8)  # the whole push's: both passes fan out from one size
    rows = np.empty(n, dtype=np.int64)
    _find(work, skeys, srows, mask, keys, rows)
    urows = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int32)
    nxt = np.empty(n, dtype=np.int32)
    direct = n_rows is not None and 4 * n_rows <= 8 * _hash_cap(n)
    tail = _direct_scratch(n_rows) if n_rows is not None and direct else _NO_TAIL
    out = np.empty(3, dtype=np.int64)
    _chain_check(work, grads.reshape(-1).view(np.uint32), rows, tail,
                 _NO_TABLE if tail.shape[0] else _scratch(n), urows, first, nxt, out)
    u, dropped, bad = (int(x) for x in out)
    if bad:
        empty = np.empty(0, dtype=np.int32)
        return Groups(np.empty(0, dtype=np.int64), empty, empty, 0, bad)
    if u < 0:  # a row id past the bound (the bound was wrong): the hash scratch
        u, dropped = _chain(rows, _scratch(n), urows, first, nxt)
    return Groups(urows[:u], first[:u], nxt, dropped, 0)


_local = threading.local()


def _hash_cap(n: int) -> int:
    """Entries of the hash scratch for ``n`` keys: a power of two >= ``2n``, at least 16."""
    cap = 16
    while cap < 2 * n:
        cap *= 2
    return cap


def _scratch(n: int) -> np.ndarray:
    """This thread's dedupe table for a batch of ``n`` keys: ``int64[C]`` all -1, ``C`` a
    power of two >= ``2n`` (load <= 0.5). Kept between pushes, so a push neither allocates
    nor clears ``8C`` bytes; :func:`_chain` leaves it all -1 again. One per thread (not per
    table): its memory is that of the largest batch a thread has pushed."""
    table = getattr(_local, "table", None)
    if table is None or table.shape[0] < 2 * n:
        table = _local.table = np.full(_hash_cap(n), -1, dtype=np.int64)
    return table


def _direct_scratch(n_rows: int) -> np.ndarray:
    """This thread's chain tails by row id: ``int32[>= n_rows]`` all -1, kept between pushes
    (:func:`_chain_direct` leaves it all -1 again). :func:`group` uses it only while
    ``4 * n_rows`` bytes are no more than the hash scratch's, so a thread holds at most
    about twice the scratch memory of its largest batch."""
    tail = getattr(_local, "tail", None)
    if tail is None or tail.shape[0] < n_rows:
        tail = _local.tail = np.full(n_rows, -1, dtype=np.int32)
    return tail


def sum_groups(groups: Groups, grads: F32) -> F32:
    """``float32[U, D]``: the summed gradient of each of ``groups.rows`` (parallel)."""
    return sum_chains(grads, groups.first, groups.nxt)


_NO_TAIL = np.empty(0, dtype=np.int32)
_NO_TABLE = np.empty(0, dtype=np.int64)


@batch_kernel
def _chain_check(bits, rows, tail, table, urows, first, nxt, out):  # pragma: no cover - numba
    """Two tasks, side by side on two threads in the parallel build: link the chains of
    ``rows`` (:func:`_chain_direct` through ``tail`` if it has entries, else :func:`_chain`
    through ``table``), ``out[0] = U`` and ``out[1] = dropped``; and count the NaN and inf
    values of ``bits`` (the gradients as ``uint32[N * D]``) into ``out[2]``. The count
    streams the gradients once while the serial chain pass waits on its random accesses."""
    for task in nb.prange(2):
        if task == 0:
            if tail.shape[0]:
                u, dropped = _chain_direct(rows, tail, urows, first, nxt)
            else:
                u, dropped = _chain(rows, table, urows, first, nxt)
            out[0] = u
            out[1] = dropped
        else:
            out[2] = _count_nonfinite(bits)


@nb.njit(cache=True, nogil=True)
def _count_nonfinite(bits):  # pragma: no cover - numba
    """NaN and inf values among ``bits: uint32[M]`` (float32 bits: exponent bits all set);
    an integer count vectorises, a float test adds one at a time."""
    bad = 0
    for i in range(bits.shape[0]):
        bad += 1 if (bits[i] & _EXP) == _EXP else 0
    return bad


@nb.njit(cache=True, nogil=True)
def _chain_direct(rows, tail, urows, first, nxt):  # pragma: no cover - numba
    """:func:`_chain` through ``tail: int32[R]`` (all -1 on entry and on return), the last
    occurrence so far of each row id: one prefetched random access a key. Returns
    ``(-1, 0)``, with ``tail`` all -1 again, if a row id is ``>= R``."""
    n = rows.shape[0]
    cap = tail.shape[0]
    u = 0
    dropped = 0
    for i in range(n):
        if i + PREFETCH_DISTANCE < n:
            prefetch(tail, rows[i + PREFETCH_DISTANCE])  # a hint: -1 or >= R cannot fault
        r = rows[i]
        nxt[i] = -1
        if r < 0:
            dropped += 1
            continue
        if r >= cap:
            for p in range(u):
                tail[urows[p]] = -1
            return -1, 0
        t = tail[r]
        if t < 0:
            urows[u] = r
            first[u] = i
            u += 1
        else:
            nxt[t] = i
        tail[r] = i
    for p in range(u):  # leave the scratch empty for the next push
        tail[urows[p]] = -1
    return u, dropped


@nb.njit(cache=True, nogil=True)
def _chain(rows, table, urows, first, nxt):  # pragma: no cover - numba
    """Link equal ``rows`` (``int64[N]``, -1 skipped) into chains; returns ``(U, dropped)``.

    Distinct rows are found with ``table``, an open-addressing scratch of a power-of-two
    ``C >= 2N`` int64 entries, all -1 (empty) on entry and on return; an entry packs
    ``row << 32 | p``, its home is the row's Fibonacci hash. Probes are prefetched;
    ``last[p]`` is the chain's tail while it grows.
    """
    n = rows.shape[0]
    cap = table.shape[0]
    bits = 0
    while (1 << bits) < cap:
        bits += 1
    tmask = cap - 1
    shift = np.uint64(64 - bits)
    last = np.empty(n, dtype=np.int32)
    u = 0
    dropped = 0
    for i in range(n):
        if i + PREFETCH_DISTANCE < n:
            ra = rows[i + PREFETCH_DISTANCE]
            prefetch(table, np.int64((np.uint64(ra) * _FIB) >> shift))
        r = rows[i]
        nxt[i] = -1
        if r < 0:
            dropped += 1
            continue
        h = np.int64((np.uint64(r) * _FIB) >> shift)
        while True:
            e = table[h]
            if e < 0:
                table[h] = (np.int64(r) << 32) | u
                urows[u] = r
                first[u] = i
                last[u] = i
                u += 1
                break
            if (e >> 32) == r:
                p = e & 0xFFFFFFFF
                nxt[last[p]] = i
                last[p] = i
                break
            h = (h + 1) & tmask
    for p in range(u):  # leave the scratch empty for the next push
        h = np.int64((np.uint64(urows[p]) * _FIB) >> shift)
        while table[h] >> 32 != urows[p]:
            h = (h + 1) & tmask
        table[h] = -1
    return u, dropped
