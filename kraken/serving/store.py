"""``WeightStore``: the serving side's rows, weights only, every table behind one index.

A trainer table row carries weights, optimizer state and metadata, and each table has
its own hash index. Serving needs only the weights, and the tables of one model are
keyed by the same feature IDs (``emb`` and the dim-1 ``wide`` table hold the same keys),
so the store keeps **one** index for all tables and one row per key::

    index (DenseIndex, 12 bytes a slot, 80-92% full)    key -> row r
    weights[t][r]   table t's row in its WeightFormat: D_t values in fp32 / fp16 / bf16
                    (bf16 stored as uint16), or D_t uint8 codes + fp16 scale + fp16 bias
                    (int8, FBGEMM's fused row-wise layout, :mod:`kraken.serving.quant`)
    present[r]      bit t set <=> table t holds the key (an absent table reads as
                    default); only with two or more tables: with one, a key in the index
                    is a key of the table

With ``owners=True`` every row also records the parameter-server shard that last wrote it
(``owner[r]``, uint16), so one shard's rows can be replaced from that shard's snapshot
without touching the others' (:meth:`owned`).

A key's row is freed when no table holds it any more; freed rows are reused first.
Columns are reserved for ``capacity`` rows (the sum of the trainer's table budgets, an
upper bound of distinct live keys) as ``MAP_NORESERVE`` memory, so only rows in use cost
memory. Writes round to nearest (16-bit) or quantize (int8). Not thread safe on its own:
the :class:`~kraken.serving.replica.Replica` serialises access.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, cast

import numpy as np

from kraken.config import Precision, check_enum
from kraken.errors import CapacityError, InputError, ShapeError
from kraken.serving.index import DenseIndex
from kraken.serving.quant import EXTRA_BYTES, gather_int8, quantize_rows
from kraken.table.arena import reserve_array
from kraken.table.codec import STORAGE, decode, encode
from kraken.types import F32, Keys

__all__ = ["StoreTable", "WeightFormat", "WeightStore"]


class WeightFormat(enum.Enum):
    """How a replica stores a table's weights.

    ``FP32``/``FP16``/``BF16`` as in training (:class:`~kraken.config.Precision`; 16-bit
    rounds to nearest). ``INT8``: 8-bit row-wise quantization, ``D + 4`` bytes a row
    (:mod:`kraken.serving.quant`, each value within half its row's scale); a table of dim 4
    or less gains nothing from it (``D + 4 >= 2 D``) and is stored in fp16 instead
    (:meth:`for_dim`).
    """

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    def for_dim(self, dim: int) -> WeightFormat:
        """The format a table of ``dim`` gets: this one, except int8 -> fp16 at dim <= 4."""
        if self is WeightFormat.INT8 and dim + EXTRA_BYTES >= 2 * dim:
            return WeightFormat.FP16
        return self

    def row_bytes(self, dim: int) -> int:
        """Bytes of one stored row of ``dim`` values."""
        if self is WeightFormat.INT8:
            return dim + EXTRA_BYTES
        return dim * (4 if self is WeightFormat.FP32 else 2)

    @classmethod
    def of(cls, value: Any, path: str = "precision") -> WeightFormat:
        """``value`` (a format, a :class:`~kraken.config.Precision` or a name such as
        ``"int8"``) as a format; :class:`~kraken.errors.ConfigError` naming ``path`` else."""
        if isinstance(value, Precision):
            value = value.value
        return check_enum(path, value, cls)


@dataclasses.dataclass(frozen=True)
class StoreTable:
    """One table of the store: ``dim``, storage ``precision`` (a :class:`WeightFormat`,
    a :class:`~kraken.config.Precision` or its name; normalised with
    :meth:`WeightFormat.for_dim`), ``default`` value of absent keys."""

    dim: int
    precision: WeightFormat | Precision | str = WeightFormat.FP32
    default: float = 0.0

    def __post_init__(self) -> None:
        fmt = WeightFormat.of(self.precision).for_dim(self.dim)
        object.__setattr__(self, "precision", fmt)

    @property
    def format(self) -> WeightFormat:
        """The storage format (``precision`` after normalisation)."""
        return cast(WeightFormat, self.precision)

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row."""
        return self.format.row_bytes(self.dim)


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
        self._index = DenseIndex()
        self._weights = {n: reserve_array((self.capacity, *_shape(t)), _dtype(t))
                         for n, t in tables.items()}
        self._present = (reserve_array((self.capacity,), self._mask_dtype)
                         if len(tables) > 1 else None)
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
    def row_bytes(self) -> int:
        """Bytes of one row over all columns (weights of every table, presence, owner)."""
        per_row = sum(t.row_bytes for t in self.tables.values())
        if self._present is not None:
            per_row += np.dtype(self._mask_dtype).itemsize
        return per_row + (2 if self._owner is not None else 0)

    @property
    def memory_bytes(self) -> int:
        """Index plus the rows used so far (all columns) plus the free list."""
        return int(self._index.nbytes + self._high * self.row_bytes + 8 * self._n_free)

    @property
    def index_bytes(self) -> int:
        """Bytes of the index (its share of :attr:`memory_bytes`)."""
        return self._index.nbytes

    def lookup(self, table: str, keys: Keys) -> F32:
        """``float32[N, D]`` rows of ``keys: int64[N]``; keys ``table`` lacks read as default."""
        t = self._table(table)
        rows = self._index.find(keys)
        if self._present is not None:
            ok = rows >= 0
            ok[ok] = (self._present[rows[ok]] & self._mask_dtype(self._bit[table])) != 0
            rows[~ok] = -1
        out = np.empty((keys.shape[0], t.dim), dtype=np.float32)
        if t.format is WeightFormat.INT8:
            gather_int8(self._weights[table], rows, np.float32(t.default), out)
            return out
        out[:] = np.float32(t.default)
        ok = rows >= 0
        if ok.any():
            out[ok] = decode(self._weights[table][rows[ok]], _precision(t))
        return out

    def keys(self, table: str) -> Keys:
        """Every key ``table`` holds, in an unspecified order."""
        self._table(table)
        keys, rows = self._index.items()
        return keys[self._has(table, rows)]

    def owned(self, table: str, owner: int) -> Keys:
        """Every key ``table`` holds that shard ``owner`` wrote last (a store with owners)."""
        if self._owner is None:
            raise InputError("this store does not record owners")
        self._table(table)
        keys, rows = self._index.items()
        sel = self._has(table, rows)
        sel &= self._owner[rows] == owner
        return keys[sel]

    def _has(self, table: str, rows: np.ndarray) -> np.ndarray:
        """``bool[N]``: whether ``table`` holds each of ``rows`` (rows in use)."""
        if self._present is None:
            return np.ones(rows.shape[0], dtype=bool)
        return (self._present[rows] & self._mask_dtype(self._bit[table])) != 0

    def _table(self, table: str) -> StoreTable:
        t = self.tables.get(table)
        if t is None:
            raise InputError(f"unknown table {table!r}; tables are {sorted(self.tables)}")
        return t

    # -- mutations -----------------------------------------------------------------------

    def check(self, table: str, keys: Keys, weights: F32) -> None:
        """Validate an upsert without changing anything (shapes, dtypes)."""
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
            if self._present is not None:
                self._present[new_rows] = 0
            rows[absent] = new_rows
        if self._present is not None:
            bit = self._mask_dtype(self._bit[table])
            had = (self._present[rows] & bit) != 0
            self._rows[table] += int(keys.shape[0] - np.count_nonzero(had))
            self._present[rows] |= bit
        else:
            self._rows[table] += n_new
        t = self.tables[table]
        self._weights[table][rows] = _encode(weights, t)
        if owner is not None and self._owner is not None:
            self._owner[rows] = owner

    def delete(self, table: str, keys: Keys) -> None:
        """Remove ``keys`` from ``table`` (absent ones are ignored)."""
        self._table(table)
        if keys.shape[0] == 0:
            return
        rows = self._index.find(keys)
        sel = rows >= 0
        sel[sel] = self._has(table, rows[sel])
        keys, rows = keys[sel], rows[sel]
        if rows.shape[0] == 0:
            return
        self._rows[table] -= int(rows.shape[0])
        if self._present is not None:
            self._present[rows] &= ~self._mask_dtype(self._bit[table])
            gone = self._present[rows] == 0
            keys, rows = keys[gone], rows[gone]
        if rows.shape[0]:
            self._index.erase(keys)
            self._free.append(rows)
            self._n_free += int(rows.shape[0])

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


def _shape(t: StoreTable) -> tuple[int]:
    """Shape of one stored row of ``t``."""
    return (t.row_bytes if t.format is WeightFormat.INT8 else t.dim,)


def _dtype(t: StoreTable) -> type:
    return np.uint8 if t.format is WeightFormat.INT8 else STORAGE[_precision(t)]


def _precision(t: StoreTable) -> Precision:
    """The training precision of a float format (fp32 / fp16 / bf16)."""
    return Precision(t.format.value)


def _encode(weights: F32, t: StoreTable) -> np.ndarray:
    if t.format is WeightFormat.INT8:
        return quantize_rows(weights)
    return encode(weights, _precision(t))
