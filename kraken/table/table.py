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

This module holds the per-key verbs (``lookup``, ``apply_gradients``, ``assign``,
``evict``), the row lifecycle and the version bookkeeping; ``SparseTable`` takes the
whole-table reads (``stats``, ``touched_since``, ``export``, ``export_since``) from
:class:`~kraken.table.delta.TableChanges` and the files and row upserts (``save``,
``load*``, ``from_file``, ``load_rows``) from :class:`~kraken.table.files.TableFiles`;
argument checks are in :mod:`kraken.table.args`.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from kraken.config import Precision
from kraken.errors import (
    CapacityError,
    ConfigError,
    DTypeError,
    InputError,
    NonFiniteError,
    ShapeError,
)
from kraken.table import kernels, pull, push, rows16
from kraken.table.arena import RowArena
from kraken.table.args import as_keys as _as_keys
from kraken.table.args import as_now as _as_now
from kraken.table.config import TableConfig
from kraken.table.delta import TableChanges
from kraken.table.files import TableFiles
from kraken.table.index import HashIndex, RowTouch
from kraken.table.init import NewRowColumns
from kraken.table.rows import COUNTERS, TableDelta, TableRows, TableStats
from kraken.types import F32, Keys

__all__ = ["SparseTable", "TableDelta", "TableRows", "TableStats"]


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


class SparseTable(TableFiles, TableChanges):
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
                out = self._pull(flat, t)
        return out.reshape(shape + (d,))

    # -- mutations -----------------------------------------------------------------------

    def apply_gradients(self, keys: Any, grads: Any, now: int) -> None:
        """One optimizer step for the rows of ``keys: int[N]`` with ``grads: float32[N, D]``.

        Gradients of duplicate keys are summed first, in the order they come; gradients of
        keys without a row are dropped (counted in ``dropped_gradients``). Stamps
        ``last_seen = now``. Raises :class:`NonFiniteError` (changing nothing) if any
        gradient, of a present key or not, is NaN or inf.

        Two passes over the batch find the rows and link each row's duplicates
        (:func:`kraken.table.push.group`, which also checks finiteness), then the
        optimizer sums each row's gradients, steps it and writes its ``last_seen`` and
        ``stamp`` in one parallel pass
        (:meth:`~kraken.optim.base.SparseOptimizer.step_groups`); 16-bit rows are decoded
        and rounded back by :mod:`kraken.table.rows16`. The kernels release the GIL, so a
        push can run on a background thread.
        """
        flat, g, t = self._gradient_args(keys, grads, now, finite=False)
        with self._lock:
            skeys, srows, mask = self._index.slots()
            groups = push.group(skeys, srows, mask, flat, g, self._arena.high_water)
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
                w, s = rows16.read(a.weights, urows, a.precision, a.state)
                opt.update(w, s, np.arange(urows.shape[0], dtype=np.int64),
                           push.sum_groups(groups, g))
                rows16.write(a.weights, urows, w, a.precision, self._rng, a.last_seen, a.stamp,
                             t, self._open_version(), a.state, s)
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
            a = self._arena
            live = len(self._index)
            if all(p.idle(live, a.capacity) for p in self.config.eviction):
                return np.empty(0, dtype=np.int64)  # (no policies, or below their watermarks)
            keys, rows = self._index.items()
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

    def _pull(self, flat: Keys, now: int) -> F32:
        """The training pull of ``flat: int64[N]``: find or admit every key, gather, and
        count each occurrence of a key with a row as an access at ``now``.

        Returns ``float32[N, D]``: each key's weights (``default_value`` where not
        admitted). One index probe per key (the passes are in :mod:`kraken.table.pull`);
        the claims record the accesses of present keys as they find them, and the new rows'
        accesses are recorded per new key. While most new keys are turned away (a count-min
        policy's first sightings, a full table), claimed slots would mostly be released
        again, so new keys are found and deduplicated beside the index instead, and every
        access is recorded after the gather (the same decisions, rows and metadata).
        """
        a = self._arena
        if self._turned_away <= 0.5:
            # the version this change carries: opened below as soon as a row has changed
            version = self._version + 1 if self._published else self._version
            rows, pending = self._index.claim(
                flat, RowTouch(a.last_seen, a.stamp, a.count, now, version))
            if (rows >= 0).any():
                self._open_version()
            new_keys, row_of = pending.keys, np.empty(0, dtype=np.int64)
            if len(pending):
                try:
                    row_of = self._admit(pending.keys, pending.counts, now)
                finally:  # an error above must not leave claimed slots behind
                    self._index.settle(pending, row_of if row_of.shape[0] == len(pending)
                                       else np.full(len(pending), -1, dtype=np.int64))
                if a.has_count:  # the new rows' accesses, one per occurrence of their key
                    got = np.flatnonzero(row_of >= 0)  # (last_seen, stamp: set by _init_rows)
                    a.count[row_of[got]] += pending.counts[got].astype(np.float32)
            touched = True
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
            touched = False
        if new_keys.shape[0]:
            self._turned_away = float(np.count_nonzero(row_of < 0)) / new_keys.shape[0]
        out = np.empty((flat.shape[0], self.config.dim), dtype=np.float32)
        default = np.float32(self.config.default_value)
        if a.precision is Precision.FP32:
            pull.resolve_gather(out.size, rows, row_of, a.weights, default, out)
        else:
            pull.resolve_gather16(out.size, rows, row_of, a.weights.view(np.uint16),
                                  a.precision is Precision.BF16, default.view(np.uint32),
                                  out.view(np.uint32))
        if not touched and (rows >= 0).any():  # a version is opened only when a row changes
            kernels.touch(rows, a.last_seen, a.count, now, a.stamp, self._open_version())
        return out

    def _admit(self, keys: Keys, counts: np.ndarray, now: int) -> np.ndarray:
        """Admission for distinct absent ``keys: int64[U]`` seen ``counts: int64[U]`` times,
        in first-occurrence order; creates rows for the admitted ones that fit.

        Returns ``int64[U]``: the new row of each key, -1 where it was not admitted.
        """
        admit = self.config.admission.decide(keys, counts, self._sketch, self._rng)
        u = keys.shape[0]
        if admit.all():  # (Always) every key admitted: no positions to pick
            rows = self._arena.allocate(u)
            if rows.shape[0] == u:  # all fit: no scatter needed
                if u:
                    self._init_rows(keys, rows, now)
                    self._counters["admitted"] += u
                return rows
            cand_idx = np.arange(u, dtype=np.int64)
        else:
            cand_idx = np.flatnonzero(admit)
            self._counters["not_admitted"] += int(u - cand_idx.shape[0])
            rows = self._arena.allocate(cand_idx.shape[0])
        if rows.shape[0] < cand_idx.shape[0]:
            self._counters["rejected_full"] += int(cand_idx.shape[0] - rows.shape[0])
            cand_idx = cand_idx[: rows.shape[0]]
        row_of = np.full(u, -1, dtype=np.int64)
        if cand_idx.shape[0]:
            cand = keys[cand_idx]
            self._init_rows(cand, rows, now)
            self._counters["admitted"] += int(cand.shape[0])
            row_of[cand_idx] = rows
        return row_of

    def _init_rows(self, keys: Keys, rows: np.ndarray, now: int) -> None:
        """Fresh rows: initial weights of ``keys: int64[U]``, optimizer state and metadata
        written into distinct ``rows: int64[U]``, in one parallel pass over the rows
        (:meth:`Initializer.fill_new`; slices when the rows are consecutive, the arena's
        never-used tail), so a large batch's first writes into fresh pages fault on every
        core. The state is the optimizer's ``init_state`` of one row copied into each (it
        sees no keys); one that does not give every row the same state fills its rows
        itself."""
        c, a = self.config, self._arena
        n = keys.shape[0]
        if n == 0:
            return
        start = int(rows[0]) if pull.consecutive(rows) else -1
        two = np.empty((2, c.state_width), dtype=np.float32)
        c.optimizer.init_state(two)
        same = two[0].tobytes() == two[1].tobytes()
        cols = NewRowColumns(a.state, two[0] if same else two[0, :0], a.last_seen, a.count,
                             a.stamp, now, self._open_version())
        if a.precision is Precision.FP32:
            c.initializer.fill_new(keys, c.seed, a.weights, rows, start, cols)
        else:
            w = np.empty((n, c.dim), dtype=np.float32)
            c.initializer.fill(keys, c.seed, w)
            a.write(rows, w, None)
            cols.write(rows, start, n)
        if not same:
            s = np.empty((n, c.state_width), dtype=np.float32)
            c.optimizer.init_state(s)
            a.state[rows] = s

    def _read(self, flat: Keys) -> F32:
        """``float32[N, D]`` weights of ``flat: int64[N]`` (``default_value`` where absent):
        all probes, then all row copies (decoding 16-bit storage as they go)."""
        a, d = self._arena, self.config.dim
        out = np.empty((flat.shape[0], d), dtype=np.float32)
        skeys, srows, mask = self._index.slots()
        default = np.float32(self.config.default_value)
        work = out.size + 8 * flat.shape[0]
        if a.precision is Precision.FP32:
            kernels.find_gather(work, skeys, srows, mask, flat, a.weights, default, out)
        else:
            kernels.find_gather16(work, skeys, srows, mask, flat, a.weights.view(np.uint16),
                                  a.precision is Precision.BF16, default.view(np.uint32),
                                  out.view(np.uint32))
        return out
