"""What a :class:`~kraken.table.table.SparseTable` reports about itself as a whole: its
stats, the changes after a version (``touched_since``, ``export_since``) and a full
snapshot (``export``).

Versions are described in :mod:`kraken.table.rows`. A version a reader is handed is a
valid cursor: ``touched_since(v)`` / ``export_since(v)`` then give exactly the changes
after ``v``, rows changed in any column plus the keys evicted since (as far back as the
table remembers evictions: ``config.delta_log`` eviction passes, and never before a
load). Every verb here changes nothing a caller can observe.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from kraken.errors import InputError, StaleVersionError
from kraken.table.arena import RowArena, keys_by_row
from kraken.table.args import as_now
from kraken.table.config import TableConfig
from kraken.table.index import HashIndex
from kraken.table.rows import TableDelta, TableRows, TableStats
from kraken.types import Keys

__all__ = ["TableChanges"]


class TableChanges:
    """Stats, deltas and exports of :class:`~kraken.table.table.SparseTable` (a base class
    of it: the attributes below are the table's)."""

    config: TableConfig
    _lock: threading.RLock
    _index: HashIndex
    _arena: RowArena
    _sketch: np.ndarray | None
    _clock: int
    _evict_log: deque[tuple[int, Keys]]
    _log_floor: int
    _counters: dict[str, int]

    if TYPE_CHECKING:  # the table's version bookkeeping (kraken/table/table.py)
        def _publish(self) -> int: ...
        def _counts(self, rows: np.ndarray) -> np.ndarray: ...

    def stats(self) -> TableStats:
        """Sizes and cumulative counters."""
        with self._lock:
            sketch = 0 if self._sketch is None else self._sketch.nbytes
            return TableStats(
                dim=self.config.dim, capacity=self.config.capacity, live_rows=len(self._index),
                high_water=self._arena.high_water, index_slots=self._index.capacity,
                memory_bytes=self._index.nbytes + self._arena.committed_bytes + sketch,
                version=self._publish(), clock=self._clock, **self._counters)

    def touched_since(self, version: int) -> TableDelta:
        """Rows changed and keys evicted after ``version`` (0 = since creation).

        A row counts as changed when any of its columns changed: its weights (training,
        ``assign``, admission), its optimizer state, or its access metadata (a training
        ``lookup`` of it, an LFU decay of its count). So every row whose weights changed
        is in the delta, with rows that were only read in training beside them (the
        table keeps one version per row, 4 bytes, not one per column).

        ``delta.version`` covers every change made so far; passing it next time yields
        exactly the later changes. Changes nothing. Raises :class:`StaleVersionError` if
        evictions after ``version`` are no longer remembered (older than
        ``config.delta_log`` eviction passes or a load).
        """
        v = as_now(version, "version")
        with self._lock:
            current = self._check_cursor(v)
            keys, rows = self._index.items()
            changed = self._arena.stamp[rows] > v
            keys, rows = keys[changed], rows[changed]
            return TableDelta(since=v, version=current, keys=keys,
                              weights=self._arena.read(rows), evicted=self._evicted_since(v))

    def export_since(self, version: int) -> tuple[TableRows, Keys]:
        """Whole rows (weights, state, ``last_seen``, ``count``, ``stamp``) of every key whose
        row changed in any column after ``version`` (the keys of :meth:`touched_since`), and
        the keys evicted since then and absent now (``int64[E]``, sorted): what turns the
        table as it was at ``version`` into the table as it is (``rows.version``). Rows come
        in arena order.

        Raises :class:`StaleVersionError` like :meth:`touched_since`. Changes nothing.
        """
        v = as_now(version, "version")
        with self._lock:
            current = self._check_cursor(v)
            keys, sel = self._arena_order(v)
            a = self._arena
            rows = TableRows(keys=keys, weights=a.weights[sel], state=a.state[sel],
                             last_seen=a.last_seen[sel], count=self._counts(sel),
                             stamp=a.stamp[sel], version=current)
            return rows, self._evicted_since(v)

    def _check_cursor(self, v: int) -> int:
        if v < self._log_floor:
            raise StaleVersionError(
                f"version {v} is older than the oldest retained change ({self._log_floor}); "
                "resynchronise from a full snapshot")
        current = self._publish()
        if v > current:
            raise InputError(f"version {v} is newer than the table's version {current}")
        return current

    def _evicted_since(self, v: int) -> Keys:
        ev = [k for ver, k in self._evict_log if ver > v]
        evicted = np.unique(np.concatenate(ev)) if ev else np.empty(0, dtype=np.int64)
        if evicted.size:
            evicted = evicted[self._index.find(evicted) < 0]
        return evicted

    def _arena_order(self, since: int | None) -> tuple[Keys, np.ndarray | None]:
        """``(keys int64[L], rows int64[L] or None)``: the live rows (changed after ``since``
        when given) in arena order, and their keys; ``None`` rows mean ``0 .. L-1``, every
        row below the high-water mark, which columns then give as plain slices."""
        hw = self._arena.high_water
        key_at = np.empty(hw, dtype=np.int64)
        live = np.zeros(hw, dtype=bool)
        skeys, srows, _ = self._index.slots()
        n = keys_by_row(skeys, srows, key_at, live)
        if since is None and n == hw:
            return key_at, None
        if since is not None:
            live &= self._arena.stamp[:hw] > since
        sel = np.flatnonzero(live)
        return key_at[sel], sel

    def export(self) -> TableRows:
        """All live rows, columnar, in an unspecified order; a consistent full snapshot.

        ``touched_since(rows.version)`` later yields exactly the changes made after this
        export. Changes nothing.
        """
        with self._lock:
            keys, rows = self._index.items()
            a = self._arena
            return TableRows(keys=keys, weights=a.weights[rows], state=a.state[rows],
                             last_seen=a.last_seen[rows], count=self._counts(rows),
                             stamp=a.stamp[rows], version=self._publish())
