"""``SparseTable``: maps int64 feature IDs to embedding rows; batched, thread safe.

Contract: a key either holds a row (``dim`` weights plus optimizer state and
metadata) or reads as ``default_value``; live rows never exceed ``capacity``; every
verb validates all its input before changing anything, so a verb that raises
leaves the table as it was; verbs that answer questions change nothing. Time
(``now``) is never read from a clock: it comes from the caller, and where a verb
lets the caller leave it out (``lookup``, ``assign``) it is the table's own clock,
the largest ``now`` any verb has been given.

Verbs (``N`` keys with duplicates, ``D = config.dim``)::

    lookup(keys[...], train=False, now=None) -> float32[..., D]
    apply_gradients(keys[N], grads[N, D], now)        duplicates are summed
    assign(keys[N], values[N, D], now=None)           upsert weights, no admission
    evict(now) -> evicted keys                        runs config.eviction in order
    touched_since(version) -> TableDelta              rows changed and keys evicted
    stats() -> TableStats
    save(path, since=None) / load(path) / SparseTable.from_file(path)
    load_chain([[full paths], [delta paths], ...], select=None)  (format: table/persistence.py)
    export() -> TableRows / load_rows(TableRows)
    export_since(version) -> (TableRows, evicted keys)     whole rows, for incremental saves
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from kraken.arrayfile import CHUNK, Chunked
from kraken.config import Precision
from kraken.errors import (
    CapacityError,
    CheckpointMismatchError,
    ConfigError,
    CorruptCheckpointError,
    DTypeError,
    InputError,
    NonFiniteError,
    ShapeError,
    StaleVersionError,
)
from kraken.table import kernels, pull, push, rows16
from kraken.table.arena import RowArena, keys_by_row
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
from kraken.table.rows import COUNTERS, TableDelta, TableRows, TableStats
from kraken.types import F32, NOW_MAX, Keys

__all__ = ["SparseTable", "TableDelta", "TableRows", "TableStats"]


def _as_keys(keys: Any) -> tuple[Keys, tuple[int, ...]]:
    try:
        arr = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ShapeError(f"keys must be a rectangular integer array: {exc}") from None
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"keys must be an integer array, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        arr = arr.view(np.int64)
    flat = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    return flat, arr.shape


def _as_now(now: Any, what: str = "now") -> int:
    if isinstance(now, bool) or not isinstance(now, (int, np.integer)):
        kind = "a table version" if what == "version" else "an integer step or timestamp"
        raise InputError(f"{what} must be {kind}, got {now!r}")
    if not 0 <= int(now) <= NOW_MAX:
        raise InputError(f"{what} must be in [0, {NOW_MAX}], got {now}")
    return int(now)


def _as_values(values: Any, n: int, dim: int, what: str, finite: bool = True) -> F32:
    """``values`` as C-contiguous ``float32[n, dim]``; with ``finite``, free of NaN and inf."""
    if not isinstance(values, np.ndarray):
        raise DTypeError(f"{what} must be a float32 numpy array, got {type(values).__name__}")
    if values.dtype != np.float32:
        raise DTypeError(f"{what} must be float32, got {values.dtype}")
    if values.shape != (n, dim):
        raise ShapeError(f"{what} must have shape ({n}, {dim}) for {n} keys of dim {dim}, "
                         f"got {values.shape}")
    if finite and not np.isfinite(values).all():
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise NonFiniteError(f"{what} hold {bad} NaN or inf value(s)")
    return np.ascontiguousarray(values)


class SparseTable:
    """Maps int64 keys to float rows of fixed length; collisionless, growing, thread safe.

    Time comes from the caller; a ``lookup`` or ``assign`` without ``now`` uses the
    table's clock (the largest ``now`` given so far), so a caller that does not keep
    time, or a remote shard that owns it, needs no clock of its own. Reads (``lookup``
    without ``train``, ``contains``, ``stats``, ``touched_since``, ``export``, ``save``)
    change nothing a caller can observe; a version they report is a valid
    ``touched_since`` cursor.
    """

    def __init__(self, config: TableConfig) -> None:
        if not isinstance(config, TableConfig):
            raise ConfigError(f"config must be a TableConfig, got {type(config).__name__}")
        self.config = config
        self._lock = threading.RLock()
        self._index = HashIndex()
        self._arena = RowArena(config.capacity, config.dim, config.state_width,
                               config.precision,
                               counts=any(p.reads_count for p in config.eviction))
        self._sketch = config.admission.new_state()
        self._rng = np.random.default_rng(config.seed)
        self._clock = 0
        # Version of the latest change; once a reader has been handed it (``_published``),
        # the next change opens ``_version + 1``.
        self._version = 0
        self._published = True
        self._evict_log: deque[tuple[int, Keys]] = deque()
        self._log_floor = 0
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._turned_away = 0.0  # share of the last pull's new keys that got no row

    # -- queries -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        c = self.config
        return (f"SparseTable(dim={c.dim}, live={len(self)}/{c.capacity}, "
                f"optimizer={c.optimizer.kind}, precision={c.precision.value})")

    def contains(self, keys: Any) -> np.ndarray:
        """``bool[...]``: whether each key holds a row."""
        flat, shape = _as_keys(keys)
        with self._lock:
            return (self._index.find(flat) >= 0).reshape(shape)

    def lookup(self, keys: Any, *, train: bool = False, now: int | None = None) -> F32:
        """Rows of ``keys`` (any integer shape ``[...]``) as ``float32[..., D]``.

        With ``train=True`` absent keys go through admission (admitted ones get a fresh
        row from the initializer) and every occurrence counts as an access at ``now``;
        ``now=None`` is the table's clock (the largest ``now`` it has been given).
        Without ``train`` nothing changes and ``now`` is ignored.
        """
        flat, shape = _as_keys(keys)
        t = None if now is None else _as_now(now)
        d = self.config.dim
        with self._lock:
            self._counters["lookups"] += flat.shape[0]
            if not train:
                out = self._read(flat)
            else:
                t = self._clock if t is None else t
                self._clock = max(self._clock, t)
                self._counters["train_lookups"] += flat.shape[0]
                rows, out = self._pull(flat, t)
                if (rows >= 0).any():  # a version is opened only when a row changes
                    a = self._arena
                    kernels.touch(rows, a.last_seen, a.count, t, a.stamp, self._open_version())
        return out.reshape(shape + (d,))

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
        v = _as_now(version, "version")
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
        v = _as_now(version, "version")
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

    # -- mutations -----------------------------------------------------------------------

    def apply_gradients(self, keys: Any, grads: Any, now: int) -> None:
        """One optimizer step for the rows of ``keys: int[N]`` with ``grads: float32[N, D]``.

        Gradients of duplicate keys are summed first, in the order they come; gradients of
        keys without a row are dropped (counted in ``dropped_gradients``). Stamps
        ``last_seen = now``. Raises :class:`NonFiniteError` (changing nothing) if any
        gradient, of a present key or not, is NaN or inf.

        Two passes over the batch find the rows and link each row's duplicates
        (:func:`kraken.table.push.group`, which also checks finiteness), then the
        optimizer sums each row's gradients and steps it in one parallel pass
        (:meth:`~kraken.optim.base.SparseOptimizer.update_groups`). The kernels release
        the GIL, so a push can run on a background thread.
        """
        flat, g, t = self._gradient_args(keys, grads, now, finite=False)
        with self._lock:
            skeys, srows, mask = self._index.slots()
            groups = push.group(skeys, srows, mask, flat, g)
            if groups.nonfinite:
                raise NonFiniteError(f"grads hold {groups.nonfinite} NaN or inf value(s)")
            urows = groups.rows
            self._counters["dropped_gradients"] += groups.dropped
            self._counters["updated_rows"] += urows.shape[0]
            a, opt = self._arena, self.config.optimizer
            if a.precision is Precision.FP32:
                opt.step_groups(a.weights, a.state, urows, g, groups.first, groups.nxt,
                                a.last_seen, a.stamp, t, self._open_version())
            else:
                w, s = rows16.read(a.weights, urows, a.precision), a.state[urows]
                opt.update(w, s, np.arange(urows.shape[0], dtype=np.int64),
                           push.sum_groups(groups, g))
                a.state[urows] = s
                rows16.write(a.weights, urows, w, a.precision, self._rng, a.last_seen, a.stamp,
                             t, self._open_version())
            self._clock = max(self._clock, t)

    def check_gradients(self, keys: Any, grads: Any, now: int) -> None:
        """Raise what :meth:`apply_gradients` would raise for these arguments; change nothing.

        Lets a caller that applies several tables' gradients as one unit (a PS shard)
        validate every part before applying any.
        """
        self._gradient_args(keys, grads, now)

    def _gradient_args(self, keys: Any, grads: Any, now: int,
                       finite: bool = True) -> tuple[Keys, F32, int]:
        """Validated ``(keys int64[N], grads float32[N, D], now)``; ``finite=False`` leaves
        the NaN/inf check to the caller (``apply_gradients`` folds it into its first pass)."""
        flat, _ = _as_keys(keys)
        g = _as_values(grads, flat.shape[0], self.config.dim, "grads", finite)
        return flat, g, _as_now(now)

    def assign(self, keys: Any, values: Any, now: int | None = None) -> None:
        """Set the weights of distinct ``keys: int[N]`` to ``values: float32[N, D]``.

        Absent keys get a row without admission (optimizer state initialised);
        raises :class:`CapacityError` if they do not all fit, changing nothing.
        """
        flat, _ = _as_keys(keys)
        v = _as_values(values, flat.shape[0], self.config.dim, "values")
        t = None if now is None else _as_now(now)
        if kernels.unique_counts(flat)[0].shape[0] != flat.shape[0]:
            raise InputError("assign: keys must be distinct")
        with self._lock:
            t = self._clock if t is None else t
            rows, absent = self._reserve(flat, "assign")
            if absent.any():
                self._init_rows(flat[absent], rows[absent], t)
            self._arena.write(rows, v, None)
            self._arena.last_seen[rows] = t
            self._stamp(rows)
            self._clock = max(self._clock, t)

    def evict(self, now: int) -> Keys:
        """Run the eviction policies in order at time ``now``; returns evicted keys, sorted."""
        t = _as_now(now)
        with self._lock:
            self._clock = max(self._clock, t)
            if not self.config.eviction:
                return np.empty(0, dtype=np.int64)
            keys, rows = self._index.items()
            a = self._arena
            alive = np.ones(keys.shape[0], dtype=bool)
            for policy in self.config.eviction:
                idx = np.flatnonzero(alive)
                r = rows[idx]
                sel = policy.select(keys[idx], a.last_seen[r], self._counts(r), t, a.capacity)
                alive[idx[sel]] = False
            victims, vrows = keys[~alive], rows[~alive]
            if victims.size:
                self._index.erase(victims)
                a.release(vrows)
                self._evict_log.append((self._open_version(), victims))
                while len(self._evict_log) > self.config.delta_log:
                    self._log_floor = self._evict_log.popleft()[0]
                self._counters["evicted"] += victims.shape[0]
            survivors = rows[alive] if a.has_count else rows[:0]
            for policy in self.config.eviction:
                c = a.count[survivors]
                old = c.copy()
                policy.after_pass(c)
                a.count[survivors] = c
                moved = survivors[c != old]
                if moved.size:
                    a.stamp[moved] = self._open_version()
            return np.sort(victims)

    # -- persistence (the file format lives in kraken/table/persistence.py) -------------

    def save(self, path: str | os.PathLike[str], since: int | None = None) -> None:
        """Atomically write every row, the optimizer state, metadata and counters to ``path``.

        With ``since`` (a version this table reported), an incremental file: only the rows
        changed after ``since`` and the keys evicted since then (raises
        :class:`StaleVersionError` when those evictions are no longer remembered).
        Rows stream from the arena in chunks, in arena order, while the table's lock is
        held (verbs wait for the write: the file is one consistent cut).
        """
        with self._lock:
            v = None if since is None else _as_now(since, "version")
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
    def from_file(cls, path: str | os.PathLike[str]) -> SparseTable:
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
        fresh = SparseTable(self.config)
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
                 deltas: list[TableFile], fresh: SparseTable | None = None) -> None:
        """Validate parsed table files fully against this table, build the contents in
        ``fresh`` (a new table; the full file, then each delta), then swap them in."""
        check_fits(path, f.config, self.config)
        if f.incremental:
            raise CheckpointMismatchError(f"{path}: an incremental table file; restore it "
                                          "after the full save it follows (load_chain)")
        fresh = SparseTable(self.config) if fresh is None else fresh
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
        keys, _ = _as_keys(rows.keys)
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
        keys, _ = _as_keys(rows.keys)
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

    # -- internals -----------------------------------------------------------------------

    def _publish(self) -> int:
        """The current version, handed to a reader: later changes get a newer one."""
        self._published = True
        return self._version

    def _open_version(self) -> int:
        """The version the change being made carries (a new one if the last was handed out)."""
        if self._published:
            self._version += 1
            self._published = False
        return self._version

    def _stamp(self, rows: np.ndarray) -> None:
        """Mark ``rows`` as changed by the change being made (any column)."""
        self._arena.stamp[rows] = self._open_version()

    def _counts(self, rows: np.ndarray) -> np.ndarray:
        """``float32[L]`` access counts of ``rows``; zeros when the table keeps no count."""
        a = self._arena
        return a.count[rows] if a.has_count else np.zeros(rows.shape[0], dtype=np.float32)

    def _file_columns(self) -> tuple[str, ...]:
        """Arena columns a table file holds besides ``keys`` (``count`` only if kept)."""
        return _COLUMNS if self._arena.has_count else _COLUMNS_NO_COUNT

    def _reserve(self, keys: Keys, verb: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows for distinct ``keys: int64[N]``, all or nothing: ``(rows int64[N], new bool[N])``.

        Absent keys get fresh rows inserted in the index (contents left to the caller);
        raises :class:`CapacityError` naming ``verb``, changing nothing, if they do not fit.
        """
        rows = self._index.find(keys)
        new = rows < 0
        n_new = int(np.count_nonzero(new))
        if n_new > self._arena.free:
            raise CapacityError(f"{verb} needs {n_new} new rows, only {self._arena.free} "
                                f"of capacity {self.config.capacity} are free")
        if n_new:
            fresh = self._arena.allocate(n_new)
            self._index.insert(keys[new], fresh)
            rows[new] = fresh
        return rows, new

    def _pull(self, flat: Keys, now: int) -> tuple[np.ndarray, F32]:
        """The training pull of ``flat: int64[N]``: find or admit every key, gather.

        Returns ``(rows int64[N], out float32[N, D])``: each key's row (-1 where not
        admitted) and its weights (``default_value`` for -1). One index probe per key;
        the passes are described in :mod:`kraken.table.pull`. While most new keys are
        turned away (a count-min policy's first sightings, a full table), claimed slots
        would mostly be released again, so new keys are found and deduplicated beside
        the index instead (the same decisions and rows).
        """
        if self._turned_away <= 0.5:
            rows, pending = self._index.claim(flat)
            new_keys, row_of = pending.keys, np.empty(0, dtype=np.int64)
            if len(pending):
                try:
                    row_of = self._admit(pending.keys, pending.counts, now)
                finally:  # an error above must not leave claimed slots behind
                    self._index.settle(pending, row_of if row_of.shape[0] == len(pending)
                                       else np.full(len(pending), -1, dtype=np.int64))
        else:
            rows = self._index.find(flat)
            absent = np.flatnonzero(rows < 0)
            new_keys, inverse = kernels.unique_inverse(flat[absent])
            row_of = self._admit(new_keys, np.bincount(inverse, minlength=new_keys.shape[0]),
                                 now)
            kept = row_of >= 0
            if kept.any():
                self._index.insert(new_keys[kept], row_of[kept])
            rows[absent] = -2 - inverse  # pending codes, resolved below
        if new_keys.shape[0]:
            self._turned_away = float(np.count_nonzero(row_of < 0)) / new_keys.shape[0]
        a = self._arena
        if a.precision is Precision.FP32:
            out = np.empty((flat.shape[0], self.config.dim), dtype=np.float32)
            pull.resolve_gather(out.size, rows, row_of, a.weights,
                                np.float32(self.config.default_value), out)
            return rows, out
        pull.resolve(rows.shape[0], rows, row_of)
        return rows, self._gather(rows)

    def _admit(self, keys: Keys, counts: np.ndarray, now: int) -> np.ndarray:
        """Admission for distinct absent ``keys: int64[U]`` seen ``counts: int64[U]`` times,
        in first-occurrence order; creates rows for the admitted ones that fit.

        Returns ``int64[U]``: the new row of each key, -1 where it was not admitted.
        """
        admit = self.config.admission.decide(keys, counts, self._sketch, self._rng)
        cand_idx = np.flatnonzero(admit)
        u = keys.shape[0]
        self._counters["not_admitted"] += int(u - cand_idx.shape[0])
        rows = self._arena.allocate(cand_idx.shape[0])
        if rows.shape[0] < cand_idx.shape[0]:
            self._counters["rejected_full"] += int(cand_idx.shape[0] - rows.shape[0])
            cand_idx = cand_idx[: rows.shape[0]]
        if cand_idx.shape[0] == u:  # all admitted and all fit: no scatter needed
            if u:
                self._init_rows(keys, rows, now)
                self._counters["admitted"] += u
            return rows
        row_of = np.full(u, -1, dtype=np.int64)
        if cand_idx.shape[0]:
            cand = keys[cand_idx]
            self._init_rows(cand, rows, now)
            self._counters["admitted"] += int(cand.shape[0])
            row_of[cand_idx] = rows
        return row_of

    def _init_rows(self, keys: Keys, rows: np.ndarray, now: int) -> None:
        """Fresh rows: initial weights of ``keys: int64[U]`` and optimizer state written into
        distinct ``rows: int64[U]`` (slices when the rows are consecutive), metadata stamped."""
        c, a = self.config, self._arena
        n = keys.shape[0]
        if n == 0:
            return
        span = slice(int(rows[0]), int(rows[0]) + n) if pull.consecutive(rows) else None
        if a.precision is Precision.FP32:
            c.initializer.fill_rows(keys, c.seed, a.weights, rows)
        else:
            w = np.empty((n, c.dim), dtype=np.float32)
            c.initializer.fill(keys, c.seed, w)
            a.write(rows, w, None)
        if span is not None:
            c.optimizer.init_state(a.state[span])
        else:
            s = np.empty((n, c.state_width), dtype=np.float32)
            c.optimizer.init_state(s)
            a.state[rows] = s
        at = rows if span is None else span
        a.last_seen[at] = now
        a.count[at] = 0.0
        self._stamp(rows)

    def _read(self, flat: Keys) -> F32:
        a, d = self._arena, self.config.dim
        out = np.empty((flat.shape[0], d), dtype=np.float32)
        if a.precision is Precision.FP32:
            skeys, srows, mask = self._index.slots()
            kernels.find_gather(out.size + 8 * flat.shape[0], skeys, srows, mask, flat, a.weights,
                                np.float32(self.config.default_value), out)
            return out
        return self._gather(self._index.find(flat))

    def _gather(self, rows: np.ndarray) -> F32:
        a, d = self._arena, self.config.dim
        default = np.float32(self.config.default_value)
        if a.precision is Precision.FP32:
            out = np.empty((rows.shape[0], d), dtype=np.float32)
            kernels.gather(out.size, rows, a.weights, default, out)
            return out
        present = rows >= 0
        out = np.full((rows.shape[0], d), default, dtype=np.float32)
        out[present] = a.read(rows[present])
        return out


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
