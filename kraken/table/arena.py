"""Row arena: preallocated, lazily committed columns of ``capacity`` rows.

Per row ``r``::

    weights[r]    D values, float32 / float16 / bfloat16 (stored as uint16)
    state[r]      S float32 optimizer-state columns
    last_seen[r]  int32, the caller's ``now`` at the last access; free rows chain
                  the free list through this column (so it costs no extra memory)
    stamp[r]      int32, table version of the last change of any column (weights, state,
                  last_seen, count): what ``touched_since`` and ``export_since`` select by
    count[r]      float32, access count (decayed by LFU); only kept when ``counts`` is
                  set (an eviction policy reads it)

Metadata is 8 bytes per row (``last_seen``, ``stamp``), 12 with ``count``. Without
``counts``, ``count`` is a zero-stride scratch column: it has ``capacity`` entries that
all alias one float, so kernels that add to ``count[r]`` stay in bounds and commit no
memory; what it holds means nothing (readers use :attr:`RowArena.has_count`).

The columns are reserved as anonymous ``MAP_NORESERVE`` mappings: pages are
committed only when first written, so a large ``capacity`` costs address space,
not memory. Rows are handed out from the free list first, then from the
never-used tail (``high_water``), so touched memory tracks the peak live count
and evicted rows are reused. ``capacity`` is a hard limit.
"""

from __future__ import annotations

import mmap

import numba as nb
import numpy as np

from kraken.config import Precision
from kraken.table.codec import STORAGE, decode, encode

__all__ = ["RowArena", "keys_by_row", "reserve_array"]

_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_HUGE_PAGE = 2 << 20
HUGE_FROM = 128 << 20
"""Byte offset from which an arena column asks for huge pages (see :func:`reserve_array`)."""


def reserve_array(shape: tuple[int, ...], dtype: type, huge_pages: bool = False,
                  huge_from: int | None = None) -> np.ndarray:
    """An uncommitted zero-filled array (pages materialise on first write), in a mapping of
    its own (dropping the array unmaps it).

    ``huge_pages`` asks for transparent huge pages (2 MiB, where the system offers them), as
    numpy does for its large arrays: right for an array written all over (the hash index),
    where random reads then miss the TLB far less. ``huge_from`` asks for them only from
    that byte offset on (rounded up to 2 MiB): the arena's columns are filled from the
    front, so their first ``HUGE_FROM`` bytes stay on 4 KiB pages and memory follows the
    rows in use, while a large column gets huge pages beyond that point, where the at most
    2 MiB they commit past the high-water mark is under 2% of the column (page faults of
    a batch of new rows then cost half, and random gathers miss the TLB less).
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
    if hasattr(mmap, "MADV_HUGEPAGE") and (huge_pages or huge_from is not None):
        start = 0 if huge_pages else -(-int(huge_from) // _HUGE_PAGE) * _HUGE_PAGE
        if start < nbytes:
            try:
                buf.madvise(mmap.MADV_HUGEPAGE, start, nbytes - start)
            except OSError:  # a kernel without transparent huge pages: small pages it is
                pass
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


@nb.njit(cache=True, nogil=True)
def _alloc(next_free, head, out):  # pragma: no cover - numba
    """Pop rows into ``out``; ``head = [free_head, high_water, capacity]``. Returns count."""
    for n in range(out.shape[0]):
        h = head[0]
        if h >= 0:
            out[n] = h
            head[0] = next_free[h]
        elif head[1] < head[2]:
            out[n] = head[1]
            head[1] += 1
        else:
            return n
    return out.shape[0]


@nb.njit(cache=True, nogil=True)
def _release(next_free, head, rows):  # pragma: no cover - numba
    for n in range(rows.shape[0]):
        r = rows[n]
        next_free[r] = head[0]
        head[0] = r


@nb.njit(cache=True, nogil=True)
def keys_by_row(skeys, srows, key_at, live):  # pragma: no cover - numba
    """From hash-index slots (``skeys int64[C]``, ``srows int32[C]``, -1 = empty): set
    ``key_at[row] = key`` and ``live[row] = True`` for every entry; returns the count.
    ``key_at`` and ``live`` cover rows ``0 .. high_water - 1`` (arena order)."""
    n = 0
    for s in range(skeys.shape[0]):
        r = srows[s]
        if r >= 0:
            key_at[r] = skeys[s]
            live[r] = True
            n += 1
    return n


class RowArena:
    """Fixed-capacity row storage with a free list; batched verbs only."""

    def __init__(self, capacity: int, dim: int, state_width: int, precision: Precision,
                 counts: bool = True) -> None:
        self.capacity = capacity
        self.dim = dim
        self.state_width = state_width
        self.precision = precision
        self.weights = reserve_array((capacity, dim), STORAGE[precision], huge_from=HUGE_FROM)
        self.state = reserve_array((capacity, state_width), np.float32, huge_from=HUGE_FROM)
        self.last_seen = reserve_array((capacity,), np.int32, huge_from=HUGE_FROM)
        self.stamp = reserve_array((capacity,), np.int32, huge_from=HUGE_FROM)
        self.count = reserve_array((capacity,), np.float32, huge_from=HUGE_FROM) if counts else \
            np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (capacity,), (0,))
        self._head = np.array([-1, 0, capacity], dtype=np.int64)
        self.live = 0

    @property
    def high_water(self) -> int:
        """Rows ever handed out; rows ``>= high_water`` were never touched."""
        return int(self._head[1])

    @property
    def free(self) -> int:
        return self.capacity - self.live

    @property
    def has_count(self) -> bool:
        """Whether ``count`` is a real column (else a zero-stride scratch, see above)."""
        return bool(self.count.strides[0] != 0)

    @property
    def meta_bytes(self) -> int:
        """Metadata bytes per row: ``last_seen`` and ``stamp``, plus ``count`` if kept."""
        return 12 if self.has_count else 8

    @property
    def row_bytes(self) -> int:
        """Bytes of one row across all columns."""
        return self.dim * self.precision.itemsize + 4 * self.state_width + self.meta_bytes

    @property
    def committed_bytes(self) -> int:
        """Bytes of the rows touched so far (an upper bound of resident memory)."""
        return self.high_water * self.row_bytes

    def allocate(self, n: int) -> np.ndarray:
        """Up to ``n`` free rows (``int64[<=n]``; fewer when capacity runs out)."""
        head = self._head
        if head[0] < 0:  # no free rows: a run from the never-used tail, as _alloc gives it
            hw = int(head[1])
            got = min(n, self.capacity - hw)
            head[1] = hw + got
            self.live += got
            return np.arange(hw, hw + got, dtype=np.int64)
        out = np.empty(n, dtype=np.int64)
        got = int(_alloc(self.last_seen, head, out))
        self.live += got
        return out[:got]

    def release(self, rows: np.ndarray) -> None:
        """Return distinct live ``rows`` to the free list."""
        _release(self.last_seen, self._head, rows)
        self.live -= int(rows.shape[0])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """``float32[U, D]`` copy of the weights of ``rows`` (decoded from 16-bit)."""
        return decode(self.weights[rows], self.precision)

    def write(self, rows: np.ndarray, values: np.ndarray, rng: np.random.Generator | None) -> None:
        """Store ``values: float32[U, D]`` into ``rows``.

        16-bit storage rounds stochastically when ``rng`` is given (unbiased: the
        expected stored value equals the float32 value), to nearest otherwise
        (see :mod:`kraken.table.codec`).
        """
        self.weights[rows] = encode(values, self.precision, rng)
