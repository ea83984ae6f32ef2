"""Open-addressing hash index from int64 keys to int32 row ids.

Layout: two parallel arrays of a power-of-two capacity ``C``::

    slot:    0     1     2     3    ...  C-1
    keys:  [ k7 |  ?  | k2  | k9 | ... |  ?  ]   int64, meaningful where rows >= 0
    rows:  [ 3  | -1  | 0   | 5  | ... | -1  ]   int32, -1 marks an empty slot

Every int64 value is a valid key (emptiness lives in ``rows``, not in a sentinel
key). Linear probing from ``fmix64(key) & (C - 1)``; erase uses backward-shift
deletion, so there are no tombstones and probe chains never degrade. The index
grows by doubling when it would pass ``MAX_LOAD``; it stores each key exactly once
(the row arena keeps no copy), so iteration over live keys scans this index.

Memory: 12 bytes per slot, i.e. 16 to 32 bytes per live key between growths (loads
0.75 and 0.375). Growing moves the old slots a block at a time and hands each moved
block's pages back, so memory while growing stays near the new index's size (24 bytes
per old slot) rather than old + new (36).

Batch verbs hide the two cache misses of a probe (one in ``keys``, one in ``rows``)
with software prefetch: while probing key ``n`` they prefetch the home slots of key
``n + PREFETCH_DISTANCE`` in both arrays, so the misses of a batch overlap instead of
running back to back. Measured against interleaving key and row in one slot (an int64
``[C, 2]`` array or a packed 12-byte record): prefetching two arrays was as fast or
faster (1.6x over plain probing on a 10M-key index, the packed layouts 1.1-1.5x with
prefetch), so the layout stays as it is, with no change to memory or to callers.
"""

from __future__ import annotations

import mmap
from typing import NamedTuple

import numba as nb
import numpy as np

from kraken._jit import batch_kernel, prefetch
from kraken.table.arena import reserve_array
from kraken.types import Keys

__all__ = ["MAX_LOAD", "PREFETCH_DISTANCE", "HashIndex", "PendingKeys", "RowTouch", "fmix64",
           "prefetch"]

MAX_LOAD = 0.75
_MIN_CAPACITY = 1024
PREFETCH_DISTANCE = 16
"""Keys ahead of the current one whose home slots a batch probe prefetches (8-64 measured
within 10% of each other on a 10M-key index; 16 was the best)."""

@nb.njit(cache=True, nogil=True, inline="always")
def fmix64(key):  # pragma: no cover - numba
    """MurmurHash3's 64-bit finaliser: a bijective mix of all 64 bits (uint64 -> uint64)."""
    h = np.uint64(key)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@nb.njit(cache=True, nogil=True, inline="always")
def _probe(skeys, srows, mask, key):  # pragma: no cover - numba
    """Slot holding ``key``, or the empty slot where it would go (as ``-1 - slot``)."""
    i = np.int64(fmix64(key) & np.uint64(mask))
    while True:
        if srows[i] < 0:
            return -1 - i
        if skeys[i] == key:
            return i
        i = (i + 1) & mask


@nb.njit(cache=True, nogil=True)
def _prefetch_home(skeys, srows, mask, key):  # pragma: no cover - numba
    """Prefetch ``key``'s home slot in both arrays (a plain call LLVM inlines; numba's
    ``inline="always"`` here measured 3x slower probes)."""
    h = np.int64(fmix64(key) & np.uint64(mask))
    prefetch(skeys, h)
    prefetch(srows, h)


@nb.njit(cache=True, nogil=True)
def _find_serial(skeys, srows, mask, keys, out):  # pragma: no cover - numba
    """``out[n]`` = the row of ``keys[n]``, -1 where absent; serial.

    Each key is hashed once: the home slot computed to prefetch it ``PREFETCH_DISTANCE``
    keys ahead waits in a ring until its probe (hashing twice, for the prefetch and for
    the probe, measured 0.88x: 100k Zipf or uniform keys on a 10M-key index, CPU time)."""
    n_keys = keys.shape[0]
    umask = np.uint64(mask)
    ring = np.empty(PREFETCH_DISTANCE, dtype=np.int64)
    for n in range(min(PREFETCH_DISTANCE, n_keys)):
        h = np.int64(fmix64(keys[n]) & umask)
        ring[n] = h
        prefetch(skeys, h)
        prefetch(srows, h)
    for n in range(n_keys):
        i = ring[n % PREFETCH_DISTANCE]
        if n + PREFETCH_DISTANCE < n_keys:
            h = np.int64(fmix64(keys[n + PREFETCH_DISTANCE]) & umask)
            ring[n % PREFETCH_DISTANCE] = h
            prefetch(skeys, h)
            prefetch(srows, h)
        key = keys[n]
        r = -1
        while True:
            s = srows[i]
            if s < 0:
                break
            if skeys[i] == key:
                r = s
                break
            i = (i + 1) & mask
        out[n] = r


@batch_kernel
def _find_shares(parts, skeys, srows, mask, keys, out):  # pragma: no cover - numba
    """:func:`_find_serial` on ``parts`` contiguous shares of the batch, one per thread (the
    serial build runs them one after another)."""
    n_keys = keys.shape[0]
    size = (n_keys + parts - 1) // parts
    for p in nb.prange(parts):
        lo = min(p * size, n_keys)
        hi = min(lo + size, n_keys)
        _find_serial(skeys, srows, mask, keys[lo:hi], out[lo:hi])


def _find(work, skeys, srows, mask, keys, out):
    """``out: int64[N]`` = the row of each of ``keys: int64[N]``, -1 where absent; called
    like a ``batch_kernel`` (``work`` first: parallel from ``PARALLEL_MIN_WORK``)."""
    _find_shares(work, nb.get_num_threads(), skeys, srows, mask, keys, out)


@nb.njit(cache=True, nogil=True)
def _insert(skeys, srows, mask, keys, rows):  # pragma: no cover - numba
    """Insert absent, distinct ``keys``; returns how many were actually new."""
    added = 0
    for n in range(keys.shape[0]):
        if n + PREFETCH_DISTANCE < keys.shape[0]:
            _prefetch_home(skeys, srows, mask, keys[n + PREFETCH_DISTANCE])
        s = _probe(skeys, srows, mask, keys[n])
        if s < 0:
            s = -1 - s
            added += 1
        skeys[s] = keys[n]
        srows[s] = rows[n]
    return added


@nb.njit(cache=True, nogil=True)
def _rehash(old_keys, old_rows, skeys, srows, mask):  # pragma: no cover - numba
    """Insert every entry of the old slot arrays into the new, empty ones (distinct keys,
    so no comparisons): one pass over the old slots, no compacted copies in between."""
    n_old = old_rows.shape[0]
    for s in range(n_old):
        if s + PREFETCH_DISTANCE < n_old:
            _prefetch_home(skeys, srows, mask, old_keys[s + PREFETCH_DISTANCE])
        r = old_rows[s]
        if r < 0:
            continue
        k = old_keys[s]
        i = np.int64(fmix64(k) & np.uint64(mask))
        while srows[i] >= 0:
            i = (i + 1) & mask
        skeys[i] = k
        srows[i] = r


@nb.njit(cache=True, nogil=True)
def _backshift(skeys, srows, mask, i):  # pragma: no cover - numba
    """Empty slot ``i`` by backward-shift deletion: later entries of its cluster move back
    so every probe chain stays whole (empty slots hold row -1)."""
    j = i
    while True:
        j = (j + 1) & mask
        if srows[j] == -1:
            break
        home = np.int64(fmix64(skeys[j]) & np.uint64(mask))
        # Entry at j may stay if its home lies cyclically in (i, j].
        if i <= j:
            if i < home <= j:
                continue
        elif home > i or home <= j:
            continue
        skeys[i] = skeys[j]
        srows[i] = srows[j]
        i = j
    srows[i] = -1


@nb.njit(cache=True, nogil=True)
def _erase(skeys, srows, mask, keys, out_rows):  # pragma: no cover - numba
    """Erase ``keys`` with backward-shift deletion; ``out_rows[n]`` gets the freed row or -1."""
    erased = 0
    for n in range(keys.shape[0]):
        if n + PREFETCH_DISTANCE < keys.shape[0]:
            _prefetch_home(skeys, srows, mask, keys[n + PREFETCH_DISTANCE])
        i = _probe(skeys, srows, mask, keys[n])
        if i < 0:
            out_rows[n] = -1
            continue
        out_rows[n] = srows[i]
        erased += 1
        _backshift(skeys, srows, mask, i)
    return erased


# -- find-or-claim: the training pull's single probe ---------------------------------------
#
# ``claim`` probes each key once. A present key yields its row; an absent one takes the empty
# slot its probe ends on (key written, row set to the *pending* code ``-2 - u``, ``u`` its
# position among the batch's new keys in first-occurrence order), so a later duplicate in the
# same batch finds that slot and is counted there: the slot is the dedupe, no second hash.
# ``settle`` then gives each pending key its row or removes it. Between the two, only ``-1``
# marks an empty slot (codes <= -2 are occupied); no other verb runs in between (the table
# holds its lock across both).


@nb.njit(cache=True, nogil=True)
def _claim(skeys, srows, mask, keys, start, room, rows, new_keys, new_slots, new_counts,
           nu, touching, last_seen, stamp, count, now, version):  # pragma: no cover - numba
    """Probe ``keys[start:]``; returns ``(stop, nu)``: ``stop < N`` when claiming one more slot
    would exceed ``room`` new keys (the caller grows the index and resumes at ``stop``).
    With ``touching``, each occurrence of a present key also records an access of its row
    (see :meth:`HashIndex.claim`)."""
    n_keys = keys.shape[0]
    counting = touching and count.strides[0] != 0
    t = np.int32(now)
    v = np.int32(version)
    for n in range(start, n_keys):
        if n + PREFETCH_DISTANCE < n_keys:
            _prefetch_home(skeys, srows, mask, keys[n + PREFETCH_DISTANCE])
        k = keys[n]
        i = np.int64(fmix64(k) & np.uint64(mask))
        while True:
            r = srows[i]
            if r == -1:
                if nu >= room:
                    return n, nu
                skeys[i] = k
                srows[i] = -2 - nu
                new_keys[nu] = k
                new_slots[nu] = i
                new_counts[nu] = 1
                rows[n] = -2 - nu
                nu += 1
                break
            if skeys[i] == k:
                if r < -1:
                    new_counts[-2 - r] += 1
                elif touching:  # a store miss does not stall the probes that follow
                    last_seen[r] = t
                    stamp[r] = v
                    if counting:
                        count[r] += np.float32(1.0)
                rows[n] = r
                break
            i = (i + 1) & mask
    return n_keys, nu


@nb.njit(cache=True, nogil=True)
def _rehash_pending(skeys, srows, nkeys, nrows, nmask, new_slots):  # pragma: no cover - numba
    """:func:`_rehash` while claims are pending: copy every occupied slot (row != -1, pending
    codes included) into the empty arrays ``nkeys``/``nrows``; a pending key's new slot
    goes to ``new_slots[u]``."""
    cap = skeys.shape[0]
    for s in range(cap):
        if s + PREFETCH_DISTANCE < cap:
            prefetch(nrows, np.int64(fmix64(skeys[s + PREFETCH_DISTANCE]) & np.uint64(nmask)))
        r = srows[s]
        if r == -1:
            continue
        k = skeys[s]
        i = np.int64(fmix64(k) & np.uint64(nmask))
        while nrows[i] != -1:
            i = (i + 1) & nmask
        nkeys[i] = k
        nrows[i] = r
        if r < -1:
            new_slots[-2 - r] = i


@nb.njit(cache=True, nogil=True)
def _settle(skeys, srows, mask, new_keys, new_slots, row_of):  # pragma: no cover - numba
    """Pending key ``u`` gets row ``row_of[u]``; where that is -1 its slot is freed
    (backward shift, so chains stay whole). Returns how many got a row."""
    nu = new_keys.shape[0]
    kept = 0
    for u in range(nu):
        if u + PREFETCH_DISTANCE < nu:
            prefetch(srows, new_slots[u + PREFETCH_DISTANCE])
        if row_of[u] >= 0:
            srows[new_slots[u]] = row_of[u]
            kept += 1
    for u in range(nu):
        if row_of[u] >= 0:
            continue
        k = new_keys[u]
        i = np.int64(fmix64(k) & np.uint64(mask))
        while skeys[i] != k or srows[i] == -1:  # it is there: probe never meets -1 first
            i = (i + 1) & mask
        _backshift(skeys, srows, mask, i)
    return kept


class RowTouch(NamedTuple):
    """Access metadata :meth:`HashIndex.claim` records for the present keys it finds: the
    arena's ``last_seen, stamp: int32[R]`` and ``count: float32[R]`` (zero-stride when no
    count is kept) columns, and the ``now`` and ``version`` written."""

    last_seen: np.ndarray
    stamp: np.ndarray
    count: np.ndarray
    now: int
    version: int


_NO_TOUCH = RowTouch(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32), 0, 0)


class PendingKeys:
    """The new keys of one :meth:`HashIndex.claim`, in first-occurrence order.

    ``keys int64[U]`` distinct keys absent before the claim, ``counts int64[U]`` their
    occurrences in the batch; ``slots`` (internal) where each is claimed.
    """

    def __init__(self, keys: Keys, counts: np.ndarray, slots: np.ndarray, cap0: int) -> None:
        self.keys, self.counts, self._slots, self._cap0 = keys, counts, slots, cap0

    def __len__(self) -> int:
        return int(self.keys.shape[0])

_GROW_BLOCK = 1 << 19
"""Old slots moved between two releases of their pages while the index grows (a multiple
of the page size in both arrays)."""


def _empty_slots(cap: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys int64[cap], rows int32[cap] = -1)``, each in its own anonymous mapping, so
    that growing can hand pages back as it goes and a dropped array is unmapped at once
    (on huge pages, as numpy would place them: 4 KiB pages measured 0.76x the probe rate
    on a 16M-slot index)."""
    rows = reserve_array((cap,), np.int32, huge_pages=True)
    rows.fill(-1)
    return reserve_array((cap,), np.int64, huge_pages=True), rows


def _drop_pages(arr: np.ndarray, start: int, stop: int) -> None:
    """Return the whole pages of ``arr[start:stop]`` to the system (they read as zeros after);
    a no-op unless ``arr`` lies in a mapping of its own (see :func:`_empty_slots`)."""
    buf = arr.base
    while isinstance(buf, (np.ndarray, memoryview)):
        buf = buf.obj if isinstance(buf, memoryview) else buf.base
    if not isinstance(buf, mmap.mmap):
        return
    page = mmap.PAGESIZE
    lo = -(-start * arr.itemsize // page) * page
    hi = stop * arr.itemsize // page * page
    if hi > lo:
        buf.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class HashIndex:
    """A growing int64 -> int32 map; batched verbs only.

    Not thread safe on its own: :class:`~kraken.table.SparseTable` serialises access.
    """

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        cap = _MIN_CAPACITY
        while cap * MAX_LOAD < capacity:
            cap *= 2
        self._keys, self._rows = _empty_slots(cap)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        """Number of slots (a power of two)."""
        return int(self._rows.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._rows.nbytes)

    def find(self, keys: Keys) -> np.ndarray:
        """``int64[N]`` row of each key, -1 where absent."""
        out = np.empty(keys.shape[0], dtype=np.int64)
        _find(keys.shape[0] * 8, self._keys, self._rows, self.capacity - 1, keys, out)
        return out

    def reserve(self, n_more: int) -> None:
        """Grow (rehash) so that ``n_more`` further inserts stay under ``MAX_LOAD``."""
        need = self._size + n_more
        cap = self.capacity
        while need > cap * MAX_LOAD:
            cap *= 2
        if cap != self.capacity:
            old_keys, old_rows = self._keys, self._rows
            self._keys, self._rows = _empty_slots(cap)
            # Old slots go over in order, a block at a time, and each block's pages are
            # returned to the system once moved. An entry sits at most a short probe past its
            # home, and its new home is its old one plus a multiple of the old capacity, so
            # the new slots fill in step: memory while growing stays near the new index's
            # size instead of old + new.
            for a in range(0, old_rows.shape[0], _GROW_BLOCK):
                b = min(a + _GROW_BLOCK, old_rows.shape[0])
                _rehash(old_keys[a:b], old_rows[a:b], self._keys, self._rows, cap - 1)
                _drop_pages(old_keys, a, b)
                _drop_pages(old_rows, a, b)

    def insert(self, keys: Keys, rows: np.ndarray) -> None:
        """Map distinct ``keys`` to ``rows``; an existing key is re-pointed."""
        self.reserve(keys.shape[0])
        self._size += int(_insert(self._keys, self._rows, self.capacity - 1, keys,
                                  rows.astype(np.int32, copy=False)))

    def claim(self, keys: Keys, touch: RowTouch | None = None) -> tuple[np.ndarray, PendingKeys]:
        """Find-or-claim ``keys: int64[N]`` (duplicates allowed) with one probe per key.

        Returns ``(rows int64[N], pending)``: ``rows[n]`` is the key's row when present, else
        ``-2 - u`` with ``u`` its index in ``pending.keys`` (new keys, first-occurrence
        order). The index is unusable for other verbs until :meth:`settle` ``(pending, ...)``.
        Claims may load the index up to ``(1 + MAX_LOAD) / 2`` (it grows past that);
        ``settle`` brings it back to the size ``insert`` would have given.

        With ``touch``, every occurrence of a present key records an access of its row as
        ``kernels.touch`` would (``last_seen = now``, ``stamp = version``, ``count += 1``),
        in the same pass: the training pull's metadata writes cost 0.3 ms a 100k batch there
        against 0.9 ms in a pass of their own (4M-row table).
        """
        if touch is None:
            touch = _NO_TOUCH
        n = keys.shape[0]
        rows = np.empty(n, dtype=np.int64)
        new_keys = np.empty(n, dtype=np.int64)
        new_slots = np.empty(n, dtype=np.int64)
        new_counts = np.empty(n, dtype=np.int64)
        cap0 = self.capacity
        start, nu = 0, 0
        while True:
            hard = int(self.capacity * (1.0 + MAX_LOAD) / 2.0)
            room = max(0, min(hard, self.capacity - 1) - self._size)
            start, nu = _claim(self._keys, self._rows, self.capacity - 1, keys, start, room,
                               rows, new_keys, new_slots, new_counts, nu, touch is not _NO_TOUCH,
                               touch.last_seen, touch.stamp, touch.count, touch.now,
                               touch.version)
            if start >= n:
                break
            # Grow once for the new keys still expected at the rate seen so far (all-new
            # batches grow straight to the size insert would give, not by repeated doubling).
            rate = nu / start if start else 1.0
            need = self._size + nu + int(rate * (n - start)) + 1
            cap = 2 * self.capacity
            while need > cap * MAX_LOAD:
                cap *= 2
            try:
                self._resize(cap, new_slots)
            except BaseException:  # (out of memory) release the claims made so far
                _settle(self._keys, self._rows, self.capacity - 1, new_keys[:nu],
                        new_slots[:nu], np.full(nu, -1, dtype=np.int64))
                raise
        return rows, PendingKeys(new_keys[:nu], new_counts[:nu], new_slots[:nu], cap0)

    def settle(self, pending: PendingKeys, rows: np.ndarray) -> None:
        """End a :meth:`claim`: pending key ``u`` maps to ``rows[u]`` (``int64[U]``, distinct
        rows), or is removed where ``rows[u] == -1``; then the index takes the capacity
        ``insert`` of the kept keys would have given it."""
        kept = int(_settle(self._keys, self._rows, self.capacity - 1, pending.keys,
                           pending._slots, rows))
        self._size += kept
        if self.capacity > pending._cap0:  # grew while claiming: maybe for dropped keys
            cap = pending._cap0
            while self._size > cap * MAX_LOAD:
                cap *= 2
            if cap != self.capacity:
                self._resize(cap, np.empty(0, dtype=np.int64))
        self.reserve(0)

    def _resize(self, cap: int, new_slots: np.ndarray) -> None:
        """Rehash into ``cap`` slots, pending claims included (their slots into ``new_slots``);
        old slots move a block at a time and hand their pages back, as ``reserve`` does."""
        old_keys, old_rows = self._keys, self._rows
        self._keys, self._rows = _empty_slots(cap)
        for a in range(0, old_rows.shape[0], _GROW_BLOCK):
            b = min(a + _GROW_BLOCK, old_rows.shape[0])
            _rehash_pending(old_keys[a:b], old_rows[a:b], self._keys, self._rows, cap - 1,
                            new_slots)
            _drop_pages(old_keys, a, b)
            _drop_pages(old_rows, a, b)

    def erase(self, keys: Keys) -> np.ndarray:
        """Remove ``keys``; returns ``int64[N]`` freed rows (-1 where the key was absent)."""
        out = np.empty(keys.shape[0], dtype=np.int64)
        self._size -= int(_erase(self._keys, self._rows, self.capacity - 1, keys, out))
        return out

    def items(self) -> tuple[Keys, np.ndarray]:
        """``(keys int64[L], rows int64[L])`` of every live entry, in slot order."""
        live = self._rows >= 0
        return self._keys[live].copy(), self._rows[live].astype(np.int64)

    def slots(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The raw ``(keys, rows, mask)`` arrays for fused numba kernels (read-only use).

        Valid until the next ``insert`` or ``reserve``: growing replaces them and hands the
        old arrays' pages back to the system while it moves their entries (they then read
        as zeros), so a kernel must take them again after anything that may grow."""
        return self._keys, self._rows, self.capacity - 1
