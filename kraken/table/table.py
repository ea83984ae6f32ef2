"""``SparseTable``: maps int64 feature IDs to embedding rows; batched, thread safe.

Contract: a key either holds a row (``dim`` weights plus optimizer state and
metadata) or reads as ``default_value``; live rows never exceed ``capacity``; every
verb validates all its input before changing anything, so a verb that raises
leaves the table as it was. Time (``now``) always comes from the caller.

Verbs (``N`` keys with duplicates, ``D = config.dim``)::

    lookup(keys[...], train=False, now=None) -> float32[..., D]
    apply_gradients(keys[N], grads[N, D], now)        duplicates are summed
    assign(keys[N], values[N, D], now=None)           upsert weights, no admission
    evict(now) -> evicted keys                        runs config.eviction in order
    touched_since(version) -> TableDelta              rows changed and keys evicted
    stats() -> TableStats
    save(path) / load(path) / SparseTable.from_file(path)
    export() -> TableRows / load_rows(TableRows)
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque
from typing import Any

import numpy as np

from kraken.arrayfile import read_arrays, write_arrays
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
from kraken.table import kernels
from kraken.table.arena import RowArena
from kraken.table.config import TableConfig
from kraken.table.index import HashIndex
from kraken.types import F32, NOW_MAX, Keys

__all__ = ["SparseTable", "TableDelta", "TableRows", "TableStats"]

_COUNTERS = ("lookups", "train_lookups", "admitted", "not_admitted", "rejected_full",
             "evicted", "updated_rows", "dropped_gradients")
_FILE_KIND = "kraken.sparse_table"


@dataclasses.dataclass(frozen=True)
class TableStats:
    """A snapshot of a table's size and counters (counters are cumulative)."""

    dim: int
    capacity: int
    live_rows: int
    high_water: int
    index_slots: int
    memory_bytes: int
    version: int
    clock: int
    lookups: int
    train_lookups: int
    admitted: int
    not_admitted: int
    rejected_full: int
    evicted: int
    updated_rows: int
    dropped_gradients: int


@dataclasses.dataclass(frozen=True)
class TableDelta:
    """What changed in ``(since, version]``: apply ``evicted`` first, then upsert ``keys``.

    ``keys: int64[K]``, ``weights: float32[K, D]`` (current values), ``evicted: int64[E]``
    (keys evicted in the window and not live now).
    """

    since: int
    version: int
    keys: Keys
    weights: F32
    evicted: Keys


@dataclasses.dataclass(frozen=True)
class TableRows:
    """Rows in columnar form: ``keys int64[L]``, ``weights float32[L, D]`` (or stored dtype),
    ``state float32[L, S]``, ``last_seen int32[L]``, ``count float32[L]``, ``stamp int32[L]``.

    ``version`` is the table version the rows are complete up to (for ``touched_since``).
    """

    keys: Keys
    weights: np.ndarray
    state: F32
    last_seen: np.ndarray
    count: F32
    stamp: np.ndarray
    version: int = 0


def _as_keys(keys: Any) -> tuple[Keys, tuple[int, ...]]:
    arr = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"keys must be an integer array, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        arr = arr.view(np.int64)
    flat = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    return flat, arr.shape


def _as_now(now: Any) -> int:
    if isinstance(now, bool) or not isinstance(now, (int, np.integer)):
        raise InputError(f"now must be an integer step or timestamp, got {now!r}")
    if not 0 <= int(now) <= NOW_MAX:
        raise InputError(f"now must be in [0, {NOW_MAX}], got {now}")
    return int(now)


def _as_values(values: Any, n: int, dim: int, what: str) -> F32:
    if not isinstance(values, np.ndarray):
        raise DTypeError(f"{what} must be a float32 numpy array, got {type(values).__name__}")
    if values.dtype != np.float32:
        raise DTypeError(f"{what} must be float32, got {values.dtype}")
    if values.shape != (n, dim):
        raise ShapeError(f"{what} must have shape ({n}, {dim}) for {n} keys of dim {dim}, "
                         f"got {values.shape}")
    if not np.isfinite(values).all():
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise NonFiniteError(f"{what} hold {bad} NaN or inf value(s)")
    return np.ascontiguousarray(values)


class SparseTable:
    """Maps int64 keys to float rows of fixed length; collisionless, growing, thread safe."""

    def __init__(self, config: TableConfig) -> None:
        if not isinstance(config, TableConfig):
            raise TypeError(f"config must be a TableConfig, got {type(config).__name__}")
        self.config = config
        self._lock = threading.RLock()
        self._index = HashIndex()
        self._arena = RowArena(config.capacity, config.dim, config.state_width,
                               config.precision)
        self._sketch = config.admission.new_state()
        self._rng = np.random.default_rng(config.seed)
        self._clock = 0
        self._version = 1
        self._dirty = False
        self._evict_log: deque[tuple[int, Keys]] = deque()
        self._log_floor = 0
        self._counters = dict.fromkeys(_COUNTERS, 0)

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
        row from the initializer) and every occurrence counts as an access at ``now``
        (default: the latest ``now`` the table has seen). Without ``train`` nothing changes.
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
                rows = self._index.find(flat)
                absent = rows < 0
                if absent.any():
                    rows[absent] = self._admit(flat[absent], t)
                kernels.touch(rows, self._arena.last_seen, self._arena.count, t)
                out = self._gather(rows)
        return out.reshape(shape + (d,))

    def stats(self) -> TableStats:
        """Sizes and cumulative counters."""
        with self._lock:
            sketch = 0 if self._sketch is None else self._sketch.nbytes
            return TableStats(
                dim=self.config.dim, capacity=self.config.capacity, live_rows=len(self._index),
                high_water=self._arena.high_water, index_slots=self._index.capacity,
                memory_bytes=self._index.nbytes + self._arena.committed_bytes + sketch,
                version=self._version, clock=self._clock, **self._counters)

    def touched_since(self, version: int) -> TableDelta:
        """Rows changed and keys evicted after ``version`` (0 = since creation).

        Seals the open version so that ``delta.version`` covers every change made
        so far; passing ``delta.version`` next time yields exactly the later changes.
        Raises :class:`StaleVersionError` if evictions after ``version`` are no longer
        remembered (older than ``config.delta_log`` eviction passes or a load).
        """
        v = _as_now(version)
        with self._lock:
            if v < self._log_floor:
                raise StaleVersionError(
                    f"version {v} is older than the oldest retained change ({self._log_floor}); "
                    "resynchronise from a full snapshot")
            sealed = self._seal()
            if v > sealed:
                raise InputError(f"version {v} is newer than the table's version {sealed}")
            keys, rows = self._index.items()
            changed = self._arena.stamp[rows] > v
            keys, rows = keys[changed], rows[changed]
            ev = [k for ver, k in self._evict_log if ver > v]
            evicted = np.unique(np.concatenate(ev)) if ev else np.empty(0, dtype=np.int64)
            if evicted.size:
                evicted = evicted[self._index.find(evicted) < 0]
            return TableDelta(since=v, version=sealed, keys=keys,
                              weights=self._arena.read(rows), evicted=evicted)

    def export(self) -> TableRows:
        """All live rows, columnar, in an unspecified order; a consistent full snapshot.

        ``rows.version`` seals the open version: ``touched_since(rows.version)`` later
        yields exactly the changes made after this export.
        """
        with self._lock:
            keys, rows = self._index.items()
            a = self._arena
            return TableRows(keys=keys, weights=a.weights[rows], state=a.state[rows],
                             last_seen=a.last_seen[rows], count=a.count[rows],
                             stamp=a.stamp[rows], version=self._seal())

    # -- mutations -----------------------------------------------------------------------

    def apply_gradients(self, keys: Any, grads: Any, now: int) -> None:
        """One optimizer step for the rows of ``keys: int[N]`` with ``grads: float32[N, D]``.

        Gradients of duplicate keys are summed first; gradients of keys without a row
        are dropped (counted in ``dropped_gradients``). Stamps ``last_seen = now``.
        """
        flat, _ = _as_keys(keys)
        g = _as_values(grads, flat.shape[0], self.config.dim, "grads")
        t = _as_now(now)
        with self._lock:
            rows = self._index.find(flat)
            urows, ug = kernels.sum_by_row(rows, g)
            self._counters["dropped_gradients"] += int(np.count_nonzero(rows < 0))
            self._counters["updated_rows"] += urows.shape[0]
            a, opt = self._arena, self.config.optimizer
            if a.precision is Precision.FP32:
                opt.update(a.weights, a.state, urows, ug)
            else:
                w, s = a.read(urows), a.state[urows]
                opt.update(w, s, np.arange(urows.shape[0], dtype=np.int64), ug)
                a.write(urows, w, self._rng)
                a.state[urows] = s
            a.last_seen[urows] = t
            self._stamp(urows)
            self._clock = max(self._clock, t)

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
            rows = self._index.find(flat)
            absent = rows < 0
            n_new = int(np.count_nonzero(absent))
            if n_new > self._arena.free:
                raise CapacityError(f"assign needs {n_new} new rows, only {self._arena.free} "
                                    f"of capacity {self.config.capacity} are free")
            if n_new:
                new_rows = self._arena.allocate(n_new)
                self._index.insert(flat[absent], new_rows)
                self._init_rows(flat[absent], new_rows, t)
                rows[absent] = new_rows
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
                sel = policy.select(keys[idx], a.last_seen[r], a.count[r], t, a.capacity)
                alive[idx[sel]] = False
            victims, vrows = keys[~alive], rows[~alive]
            if victims.size:
                self._index.erase(victims)
                a.release(vrows)
                self._evict_log.append((self._version, victims))
                self._dirty = True
                while len(self._evict_log) > self.config.delta_log:
                    self._log_floor = self._evict_log.popleft()[0]
                self._counters["evicted"] += victims.shape[0]
            survivors = rows[alive]
            for policy in self.config.eviction:
                c = a.count[survivors]
                policy.after_pass(c)
                a.count[survivors] = c
            return np.sort(victims)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write every row, the optimizer state, metadata and counters to ``path``."""
        with self._lock:
            r = self.export()  # seals: every stamp is <= r.version < self._version
            arrays = {"keys": r.keys, "weights": r.weights, "state": r.state,
                      "last_seen": r.last_seen, "count": r.count, "stamp": r.stamp}
            if self._sketch is not None:
                arrays["sketch"] = self._sketch
            meta = {"kind": _FILE_KIND, "config": self.config.to_dict(), "clock": self._clock,
                    "version": self._version,
                    "rng": self._rng.bit_generator.state, "counters": self._counters}
            write_arrays(path, meta, arrays)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the contents with those saved at ``path``.

        The file must match this table's dim, precision and optimizer state; on any
        error (:class:`~kraken.errors.CheckpointError`) the table is unchanged.
        """
        meta, arrays = read_arrays(path)
        self._restore(path, meta, arrays)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SparseTable:
        """A new table with the config and contents saved at ``path``."""
        meta, arrays = read_arrays(path)
        try:
            config = TableConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ConfigError) as exc:
            raise CorruptCheckpointError(f"{path}: unusable table config: {exc}") from exc
        table = cls(config)
        table._restore(path, meta, arrays)
        return table

    def _restore(self, path: str | os.PathLike[str], meta: dict[str, Any],
                 arrays: dict[str, np.ndarray]) -> None:
        """Validate a parsed table file fully, then swap its contents in."""
        names = ("keys", "weights", "state", "last_seen", "count", "stamp")
        missing = [k for k in names if k not in arrays]
        if meta.get("kind") != _FILE_KIND or missing:
            raise CorruptCheckpointError(
                f"{path}: not a sparse-table file (kind {meta.get('kind')!r}, missing {missing})")
        try:
            saved = TableConfig.from_dict(meta["config"])
            clock, version = int(meta["clock"]), int(meta["version"])
            counters = {k: int(meta["counters"].get(k, 0)) for k in _COUNTERS}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptCheckpointError(f"{path}: unreadable table metadata: {exc}") from exc
        c = self.config
        for what, mine, theirs in (("dim", c.dim, saved.dim),
                                   ("precision", c.precision.value, saved.precision.value),
                                   ("optimizer", c.optimizer.kind, saved.optimizer.kind),
                                   ("state width", c.state_width, saved.state_width)):
            if mine != theirs:
                raise CheckpointMismatchError(f"{path}: {what} is {theirs!r} in the file, "
                                              f"{mine!r} in this table")
        fresh = SparseTable(c)
        try:
            fresh.load_rows(TableRows(**{k: arrays[k] for k in names}))
        except CapacityError as exc:
            raise CheckpointMismatchError(f"{path}: {exc}") from exc
        except InputError as exc:
            raise CorruptCheckpointError(f"{path}: {exc}") from exc
        sketch = arrays.get("sketch")
        want = None if fresh._sketch is None else fresh._sketch.shape
        if (None if sketch is None else sketch.shape) != want:
            raise CheckpointMismatchError(f"{path}: admission sketch does not match this table")
        try:
            fresh._rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{path}: unreadable generator state: {exc}") from exc
        with self._lock:
            self._index, self._arena, self._rng = fresh._index, fresh._arena, fresh._rng
            self._sketch = sketch
            self._clock, self._version, self._dirty = clock, version, False
            self._evict_log.clear()
            self._log_floor = version - 1  # evictions before the save are not kept
            self._counters = counters

    def load_rows(self, rows: TableRows) -> None:
        """Insert or overwrite whole rows (weights in stored dtype, state, metadata)."""
        keys, _ = _as_keys(rows.keys)
        n, c = keys.shape[0], self.config
        expect = {"weights": ((n, c.dim), self._arena.weights.dtype),
                  "state": ((n, c.state_width), np.float32), "last_seen": ((n,), np.int32),
                  "count": ((n,), np.float32), "stamp": ((n,), np.int32)}
        for name, (shape, dtype) in expect.items():
            arr = getattr(rows, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise ShapeError(f"{name}: expected {np.dtype(dtype).name}{list(shape)}, "
                                 f"got {arr.dtype}{list(arr.shape)}")
        if kernels.unique_counts(keys)[0].shape[0] != n:
            raise InputError("load_rows: keys must be distinct")
        with self._lock:
            r = self._index.find(keys)
            absent = r < 0
            n_new = int(np.count_nonzero(absent))
            if n_new > self._arena.free:
                raise CapacityError(f"{n_new} new rows do not fit: {self._arena.free} of "
                                    f"capacity {c.capacity} are free")
            new_rows = self._arena.allocate(n_new)
            self._index.insert(keys[absent], new_rows)
            r[absent] = new_rows
            a = self._arena
            a.weights[r], a.state[r], a.last_seen[r] = rows.weights, rows.state, rows.last_seen
            a.count[r], a.stamp[r] = rows.count, rows.stamp

    # -- internals -----------------------------------------------------------------------

    def _seal(self) -> int:
        """Close the open version if anything was stamped with it; returns the sealed one."""
        if self._dirty:
            self._version += 1
            self._dirty = False
        return self._version - 1

    def _stamp(self, rows: np.ndarray) -> None:
        self._arena.stamp[rows] = self._version
        self._dirty = True

    def _admit(self, keys: Keys, now: int) -> np.ndarray:
        """Admission for absent ``keys`` (with duplicates); creates rows for admitted ones.

        Returns ``int64[N]``: the new row of each key, -1 where it was not admitted.
        """
        ukeys, inverse = kernels.unique_inverse(keys)
        counts = np.bincount(inverse, minlength=ukeys.shape[0])
        admit = self.config.admission.decide(ukeys, counts, self._sketch, self._rng)
        cand_idx = np.flatnonzero(admit)
        self._counters["not_admitted"] += int(ukeys.shape[0] - cand_idx.shape[0])
        rows = self._arena.allocate(cand_idx.shape[0])
        if rows.shape[0] < cand_idx.shape[0]:
            self._counters["rejected_full"] += int(cand_idx.shape[0] - rows.shape[0])
            cand_idx = cand_idx[: rows.shape[0]]
        row_of = np.full(ukeys.shape[0], -1, dtype=np.int64)
        if cand_idx.shape[0]:
            cand = ukeys[cand_idx]
            self._index.insert(cand, rows)
            self._init_rows(cand, rows, now)
            self._counters["admitted"] += int(cand.shape[0])
            row_of[cand_idx] = rows
        return row_of[inverse]

    def _init_rows(self, keys: Keys, rows: np.ndarray, now: int) -> None:
        c, a = self.config, self._arena
        w = np.empty((keys.shape[0], c.dim), dtype=np.float32)
        c.initializer.fill(keys, c.seed, w)
        a.write(rows, w, None)
        s = np.empty((keys.shape[0], c.state_width), dtype=np.float32)
        c.optimizer.init_state(s)
        a.state[rows] = s
        a.last_seen[rows] = now
        a.count[rows] = 0.0
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
