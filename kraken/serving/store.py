"""``WeightStore``: the serving side's rows, weights only, every table behind one index.

A trainer table row carries weights, optimizer state and metadata, and each table has
its own hash index. Serving needs only the weights, and the tables of one model are
keyed by the same feature IDs (``emb`` and the dim-1 ``wide`` table hold the same keys),
so the store keeps **one** index for all tables and one row per key::

    index (HashIndex, 12 bytes a slot)    key -> row r
    weights[t][r]   D_t values of table t, fp32 / fp16 / bf16 (stored as uint16)
    present[r]      bit t set <=> table t holds the key (an absent table reads as default)

With ``owners=True`` every row also records the parameter-server shard that last wrote it
(``owner[r]``, uint16), so one shard's rows can be replaced from that shard's snapshot
without touching the others' (:meth:`owned`).

A key's row is freed when no table holds it any more; freed rows are reused first.
Columns are reserved for ``capacity`` rows (the sum of the trainer's table budgets, an
upper bound of distinct live keys) as ``MAP_NORESERVE`` memory, so only rows in use cost
memory. Writes round to nearest (16-bit). Not thread safe on its own: the
:class:`~kraken.serving.replica.Replica` serialises access.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.config import Precision
from kraken.errors import CapacityError, InputError, ShapeError
from kraken.table.arena import reserve_array
from kraken.table.codec import STORAGE, decode, encode
from kraken.table.index import HashIndex
from kraken.types import F32, Keys

__all__ = ["StoreTable", "WeightStore"]

@dataclasses.dataclass(frozen=True)
class StoreTable:
    """One table of the store: ``dim``, storage ``precision``, ``default`` value of absent keys."""

    dim: int
    precision: Precision = Precision.FP32
    default: float = 0.0


class WeightStore:
    """Rows of several tables keyed by int64 feature IDs (see the module docstring)."""

    def __init__(self, tables: dict[str, StoreTable], capacity: int, *,
                 owners: bool = False) -> None:
        if not 1 <= len(tables) <= 64:
            raise InputError(f"a store holds 1 to 64 tables, got {len(tables)}")
        self.tables = dict(tables)
        self.capacity = int(capacity)
        self._bit = {name: np.uint64(1) << np.uint64(i) for i, name in enumerate(tables)}
        self._mask_dtype = np.uint8 if len(tables) <= 8 else np.uint64
        self._index = HashIndex()
        self._weights = {n: reserve_array((self.capacity, t.dim), STORAGE[t.precision])
                         for n, t in tables.items()}
        self._present = reserve_array((self.capacity,), self._mask_dtype)
        self._owner = reserve_array((self.capacity,), np.uint16) if owners else None
        self._free: list[np.ndarray] = []
        self._n_free = 0
        self._high = 0
        self._rows = dict.fromkeys(tables, 0)

    # -- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Distinct keys held by any table."""
        return len(self._index)

    def rows(self, table: str) -> int:
        """Keys held by ``table``."""
        self._table(table)
        return self._rows[table]

    @property
    def memory_bytes(self) -> int:
        """Index plus the rows used so far (all columns) plus the free list."""
        per_row = sum(t.dim * t.precision.itemsize for t in self.tables.values())
        per_row += np.dtype(self._mask_dtype).itemsize + (2 if self._owner is not None else 0)
        return int(self._index.nbytes + self._high * per_row + 8 * self._n_free)

    def lookup(self, table: str, keys: Keys) -> F32:
        """``float32[N, D]`` rows of ``keys: int64[N]``; keys ``table`` lacks read as default."""
        t = self._table(table)
        rows = self._index.find(keys)
        ok = rows >= 0
        if ok.any():
            ok[ok] = (self._present[rows[ok]] & self._mask_dtype(self._bit[table])) != 0
        out = np.full((keys.shape[0], t.dim), np.float32(t.default), dtype=np.float32)
        if ok.any():
            out[ok] = decode(self._weights[table][rows[ok]], t.precision)
        return out

    def keys(self, table: str) -> Keys:
        """Every key ``table`` holds, in an unspecified order."""
        self._table(table)
        keys, rows = self._index.items()
        return keys[(self._present[rows] & self._mask_dtype(self._bit[table])) != 0]

    def owned(self, table: str, owner: int) -> Keys:
        """Every key ``table`` holds that shard ``owner`` wrote last (a store with owners)."""
        if self._owner is None:
            raise InputError("this store does not record owners")
        self._table(table)
        keys, rows = self._index.items()
        sel = (self._present[rows] & self._mask_dtype(self._bit[table])) != 0
        sel &= self._owner[rows] == owner
        return keys[sel]

    def _table(self, table: str) -> StoreTable:
        t = self.tables.get(table)
        if t is None:
            raise InputError(f"unknown table {table!r}; tables are {sorted(self.tables)}")
        return t

    # -- mutations -----------------------------------------------------------------------

    def check(self, table: str, keys: Keys, weights: F32) -> None:
        """Validate an upsert without changing anything (shapes, dtypes, distinct keys)."""
        d = self._table(table).dim
        if keys.dtype != np.int64 or keys.ndim != 1:
            raise ShapeError(f"{table}: keys must be int64[N], got {keys.dtype}{list(keys.shape)}")
        if weights.dtype != np.float32 or weights.shape != (keys.shape[0], d):
            raise ShapeError(f"{table}: weights must be float32[{keys.shape[0]}, {d}], "
                             f"got {weights.dtype}{list(weights.shape)}")

    def upsert(self, table: str, keys: Keys, weights: F32, owner: int | None = None) -> None:
        """Set the rows of distinct ``keys`` in ``table`` (adding keys as needed); with
        ``owner`` (a store with owners), record that shard as their writer."""
        self.check(table, keys, weights)
        if keys.shape[0] == 0:
            return
        rows = self._index.find(keys)
        absent = rows < 0
        n_new = int(np.count_nonzero(absent))
        if n_new:
            new_rows = self._allocate(n_new)
            self._index.insert(keys[absent], new_rows)
            self._present[new_rows] = 0
            rows[absent] = new_rows
        bit = self._mask_dtype(self._bit[table])
        had = (self._present[rows] & bit) != 0
        self._rows[table] += int(keys.shape[0] - np.count_nonzero(had))
        self._present[rows] |= bit
        t = self.tables[table]
        self._weights[table][rows] = encode(weights, t.precision)
        if owner is not None and self._owner is not None:
            self._owner[rows] = owner

    def delete(self, table: str, keys: Keys) -> None:
        """Remove ``keys`` from ``table`` (absent ones are ignored)."""
        self._table(table)
        if keys.shape[0] == 0:
            return
        rows = self._index.find(keys)
        bit = self._mask_dtype(self._bit[table])
        sel = rows >= 0
        sel[sel] = (self._present[rows[sel]] & bit) != 0
        keys, rows = keys[sel], rows[sel]
        if rows.shape[0] == 0:
            return
        self._present[rows] &= ~bit
        self._rows[table] -= int(rows.shape[0])
        gone = self._present[rows] == 0
        if gone.any():
            self._index.erase(keys[gone])
            freed = rows[gone]
            self._free.append(freed)
            self._n_free += int(freed.shape[0])

    def _allocate(self, n: int) -> np.ndarray:
        if n > self._n_free + self.capacity - self._high:
            raise CapacityError(f"{n} new keys do not fit: {len(self)} of capacity "
                                f"{self.capacity} held")
        parts, need = [], n
        while need and self._free:
            head = self._free.pop()
            take, rest = head[:need], head[need:]
            if rest.shape[0]:
                self._free.append(rest)
            parts.append(take)
            need -= take.shape[0]
        self._n_free -= n - need
        if need:
            parts.append(np.arange(self._high, self._high + need, dtype=np.int64))
            self._high += need
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
