"""Saving and restoring a :class:`~kraken.table.table.SparseTable`: ``save`` (full or
incremental), ``load`` / ``from_file`` / ``load_merged`` / ``load_chain``, and whole-row
upserts (``load_rows``).

The file format lives in :mod:`kraken.table.persistence`; this module moves rows between
it and the table. A save streams the arena's columns in chunks of about ``CHUNK`` bytes
while the table's lock is held (one consistent cut). A restore validates and builds the
whole contents in a new table, the full file read straight into its arena and its index
built beside the reads, then swaps them in: on any error the table is unchanged.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from kraken.arrayfile import CHUNK, Chunked
from kraken.errors import (
    CapacityError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    InputError,
    ShapeError,
)
from kraken.table import kernels
from kraken.table.arena import RowArena
from kraken.table.args import as_keys, as_now
from kraken.table.config import TableConfig
from kraken.table.index import HashIndex
from kraken.table.persistence import (
    TableFile,
    check_fits,
    merge_table_files,
    read_table_config,
    read_table_file,
    write_table_file,
)
from kraken.table.rows import TableRows
from kraken.types import NOW_MAX, Keys

__all__ = ["TableFiles"]


class TableFiles:
    """Saves, restores and row upserts of :class:`~kraken.table.table.SparseTable` (a base
    class of it: the attributes below are the table's)."""

    config: TableConfig
    _lock: threading.RLock
    _index: HashIndex
    _arena: RowArena
    _sketch: np.ndarray | None
    _rng: np.random.Generator
    _clock: int
    _version: int
    _published: bool
    _evict_log: deque[tuple[int, Keys]]
    _log_floor: int
    _counters: dict[str, int]

    if TYPE_CHECKING:  # the table's own (kraken/table/table.py) and its deltas' (delta.py)
        def __init__(self, config: TableConfig) -> None: ...
        def _publish(self) -> int: ...
        def _stamp(self, rows: np.ndarray) -> None: ...
        def _reserve(self, keys: Keys, verb: str) -> tuple[np.ndarray, np.ndarray]: ...
        def _check_cursor(self, v: int) -> int: ...
        def _evicted_since(self, v: int) -> Keys: ...
        def _arena_order(self, since: int | None) -> tuple[Keys, np.ndarray | None]: ...

    def save(self, path: str | os.PathLike[str], since: int | None = None) -> None:
        """Atomically write every row, the optimizer state, metadata and counters to ``path``.

        With ``since`` (a version this table reported), an incremental file: only the rows
        changed after ``since`` and the keys evicted since then (raises
        :class:`StaleVersionError` when those evictions are no longer remembered).
        Rows stream from the arena in chunks, in arena order, while the table's lock is
        held (verbs wait for the write: the file is one consistent cut).
        """
        with self._lock:
            v = None if since is None else as_now(since, "version")
            if v is not None:
                self._check_cursor(v)
            keys, sel = self._arena_order(v)
            f = TableFile(config=self.config, rows=None,  # type: ignore[arg-type]
                          sketch=None if self._sketch is None else self._sketch.copy(),
                          clock=self._clock, version=self._publish(),
                          rng_state=self._rng.bit_generator.state,
                          counters=dict(self._counters), since=v,
                          evicted=None if v is None else self._evicted_since(v))
            a = self._arena
            columns: dict[str, np.ndarray | Chunked] = {"keys": keys}
            for name in self._file_columns():
                columns[name] = _column(getattr(a, name), keys.shape[0], sel)
            write_table_file(path, f, columns)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the contents with those saved at ``path`` (a full file).

        The file must match this table's dim, precision and optimizer state; on any
        error (:class:`~kraken.errors.CheckpointError`) the table is unchanged.
        """
        self.load_chain([[path]])

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """A new table with the config and contents saved at ``path`` (a full file)."""
        table = cls(read_table_config(path))
        table.load_chain([[path]])
        return table

    def load_merged(self, paths: list[str | os.PathLike[str]],
                    select: Callable[[Keys], np.ndarray] | None = None) -> None:
        """Replace the contents with the rows of several table files (the slices of one
        table written by several shards) whose keys ``select`` keeps (``bool[L]``).

        See :func:`~kraken.table.persistence.merge_table_files` for what carries over.
        All files are validated first; on any error the table is unchanged.
        """
        self.load_chain([list(paths)], select)

    def load_chain(self, chain: list[list[str | os.PathLike[str]]],
                   select: Callable[[Keys], np.ndarray] | None = None) -> None:
        """Replace the contents with a chain of saves: ``chain[0]`` the slices of a full
        save, each later entry the slices of an incremental save made after the previous
        one, applied in order (evicted keys erased, rows upserted). With one slice per
        entry and no ``select`` the table comes back exactly as it was saved (rows,
        optimizer state, metadata, counters, generator state); with several slices or
        ``select`` see :meth:`load_merged`. All files are validated and applied to a new
        table first; on any error this table is unchanged.
        """
        if not chain or not all(chain):
            raise CheckpointMismatchError("a chain of table files needs a full save first")
        parsed = []
        fresh = type(self)(self.config)
        for i, paths in enumerate(chain):
            files = []
            for p in paths:
                direct = i == 0 and len(paths) == 1 and select is None
                f = fresh._read_full(p) if direct else read_table_file(p)
                check_fits(p, f.config, self.config)
                if f.incremental != (i > 0):
                    raise CheckpointMismatchError(
                        f"{p}: {'an incremental' if f.incremental else 'a full'} table file "
                        f"where the chain needs {'a full' if i == 0 else 'an incremental'} one")
                files.append(f)
            merged = files[0] if len(files) == 1 and select is None \
                else merge_table_files(files, select)
            parsed.append(merged)
        for prev, nxt in zip(parsed, parsed[1:]):
            if nxt.since is not None and nxt.since > prev.version:
                raise CheckpointMismatchError(
                    f"table chain has a gap: changes after version {nxt.since} follow a "
                    f"save at version {prev.version}")
        first = os.fspath(chain[0][0])
        where = first if len(chain) == 1 and len(chain[0]) == 1 else \
            f"{sum(map(len, chain))} table file(s) from {os.path.dirname(first)}"
        self._restore(where, parsed[0], parsed[1:], fresh)

    def _read_full(self, path: str | os.PathLike[str]) -> TableFile:
        """Read a table file for :meth:`_load_empty` of this new, empty table: row columns
        straight into the arena (rows ``0 .. L-1``), and the index built from the keys on
        a helper thread while the other columns are read (numba releases the GIL)."""
        a = self._arena
        builder: list[threading.Thread] = []
        failed: list[BaseException] = []

        def into(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
            col = getattr(a, name) if name in self._file_columns() else None
            if col is None or not shape or shape[0] > a.capacity or dtype != col.dtype \
                    or shape[1:] != col.shape[1:]:
                return None
            return col[:shape[0]]  # type: ignore[no-any-return]

        def index(keys: np.ndarray) -> None:
            try:
                self._index.insert(keys, a.allocate(keys.shape[0]))
            except BaseException as exc:  # re-raised on the reading thread
                failed.append(exc)

        def after(name: str, arr: np.ndarray) -> None:
            if name == "keys" and arr.ndim == 1 and arr.dtype == np.int64 \
                    and 0 < arr.shape[0] <= a.capacity:
                builder.append(threading.Thread(target=index, args=(arr,), daemon=True))
                builder[0].start()

        try:
            return read_table_file(path, into, after)
        finally:
            for th in builder:
                th.join()
            if failed:
                raise failed[0]

    def _restore(self, path: str | os.PathLike[str], f: TableFile,
                 deltas: list[TableFile], fresh: Self | None = None) -> None:
        """Validate parsed table files fully against this table, build the contents in
        ``fresh`` (a new table; the full file, then each delta), then swap them in."""
        check_fits(path, f.config, self.config)
        if f.incremental:
            raise CheckpointMismatchError(f"{path}: an incremental table file; restore it "
                                          "after the full save it follows (load_chain)")
        fresh = type(self)(self.config) if fresh is None else fresh
        try:
            fresh._load_empty(f.rows)
            for d in deltas:
                if d.evicted is not None and d.evicted.size:
                    freed = fresh._index.erase(np.ascontiguousarray(d.evicted, np.int64))
                    fresh._arena.release(freed[freed >= 0])
                fresh._upsert_rows(d.rows, keep_stamps=True)
        except CapacityError as exc:
            raise CheckpointMismatchError(f"{path}: {exc}") from exc
        except InputError as exc:
            raise CorruptCheckpointError(f"{path}: {exc}") from exc
        last = deltas[-1] if deltas else f
        want = None if fresh._sketch is None else fresh._sketch.shape
        if (None if last.sketch is None else last.sketch.shape) != want:
            raise CheckpointMismatchError(f"{path}: admission sketch does not match this table")
        try:
            fresh._rng.bit_generator.state = last.rng_state
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{path}: unreadable generator state: {exc}") from exc
        # Rows keep the versions they were saved with; none is newer than the last save,
        # so touched_since(last.version) starts empty (a damaged file cannot break that).
        st = fresh._arena.stamp[:fresh._arena.high_water]
        np.minimum(st, np.int32(min(last.version, NOW_MAX)), out=st)
        with self._lock:
            self._index, self._arena, self._rng = fresh._index, fresh._arena, fresh._rng
            self._sketch = last.sketch
            self._clock, self._version, self._published = last.clock, last.version, True
            self._evict_log.clear()
            self._log_floor = last.version  # evictions before the save are not kept
            self._counters = dict(last.counters)

    def _load_empty(self, rows: TableRows) -> None:
        """:meth:`load_rows` into this new, empty table: rows ``0 .. L-1`` in file order,
        filled by plain copies (the restore path; no per-row scatter)."""
        keys, _ = as_keys(rows.keys)
        n = keys.shape[0]
        self._check_rows(rows, n)
        a = self._arena
        if a.live == 0:  # not yet indexed by _read_full
            if n > a.free:
                raise CapacityError(f"load_rows needs {n} new rows, only {a.free} "
                                    f"of capacity {self.config.capacity} are free")
            self._index.insert(keys, a.allocate(n))  # a new arena hands out 0 .. n-1
        if a.live != n or len(self._index) != n:
            raise InputError("load_rows: keys must be distinct")
        for name in self._file_columns():
            col, src = getattr(a, name), getattr(rows, name)
            if not np.shares_memory(col[:n], src):  # read straight into the arena already
                col[:n] = src

    def _check_rows(self, rows: TableRows, n: int) -> None:
        c = self.config
        expect = {"weights": ((n, c.dim), self._arena.weights.dtype),
                  "state": ((n, c.state_width), np.float32), "last_seen": ((n,), np.int32),
                  "count": ((n,), np.float32), "stamp": ((n,), np.int32)}
        for name, (shape, dtype) in expect.items():
            arr = getattr(rows, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise ShapeError(f"{name}: expected {np.dtype(dtype).name}{list(shape)}, "
                                 f"got {arr.dtype}{list(arr.shape)}")

    def load_rows(self, rows: TableRows) -> None:
        """Insert or overwrite whole rows (weights in stored dtype, state, ``last_seen``,
        ``count``; ``count`` is dropped by a table that keeps none). The rows count as
        changed now: their ``stamp`` becomes the current version, whatever ``rows.stamp``
        says, so :meth:`touched_since` reports them.

        All or nothing: raises :class:`CapacityError` if the new keys do not fit.
        """
        if not isinstance(rows, TableRows):
            raise InputError(f"rows must be a TableRows, got {type(rows).__name__}")
        with self._lock:
            self._upsert_rows(rows, keep_stamps=False)

    def _upsert_rows(self, rows: TableRows, keep_stamps: bool) -> None:
        """:meth:`load_rows`; with ``keep_stamps`` the rows keep ``rows.stamp`` (replaying
        saved files, whose versions the restored table takes over) instead of a new one."""
        keys, _ = as_keys(rows.keys)
        n = keys.shape[0]
        self._check_rows(rows, n)
        if kernels.unique_counts(keys)[0].shape[0] != n:
            raise InputError("load_rows: keys must be distinct")
        r, _ = self._reserve(keys, "load_rows")
        a = self._arena
        a.weights[r], a.state[r], a.last_seen[r] = rows.weights, rows.state, rows.last_seen
        if a.has_count:
            a.count[r] = rows.count
        if keep_stamps:
            a.stamp[r] = rows.stamp
        elif n:
            self._stamp(r)

    def _file_columns(self) -> tuple[str, ...]:
        """Arena columns a table file holds besides ``keys`` (``count`` only if kept)."""
        return _COLUMNS if self._arena.has_count else _COLUMNS_NO_COUNT



_COLUMNS = ("weights", "state", "last_seen", "count", "stamp")
"""The arena's row columns a table file holds besides ``keys``."""
_COLUMNS_NO_COUNT = tuple(c for c in _COLUMNS if c != "count")


def _column(arr: np.ndarray, n: int, sel: np.ndarray | None) -> Chunked:
    """Rows ``sel`` (or ``0 .. n-1`` when None) of an arena column, as chunks of about
    ``CHUNK`` bytes: slices of the arena itself, or gathered a chunk at a time."""
    row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    step = max(1, CHUNK // row)

    def chunks() -> Any:
        for i in range(0, n, step):
            yield arr[i:min(n, i + step)] if sel is None else arr[sel[i:i + step]]

    return Chunked(dtype=arr.dtype, shape=(n,) + arr.shape[1:], chunks=chunks)
