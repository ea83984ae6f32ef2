"""``EmbeddingLayout``: how a batch's feature IDs become a model's input tensors.

The layout is pure (numpy and torch, no parameter server): it knows the stream's schema,
which tables a model reads, how multi-valued fields are pooled and which of them are also
kept as sequences. It works in two steps around a row source that it never sees:

``prepare(batch)`` (numpy/numba, thread-safe)
    every ID of the batch, deduplicated once per batch (O(N), numba)::

        ids      int64[N]  the B * F single-valued IDs (row-major) followed by the values
                           of each multi-valued field in schema order
        keys     int64[U]  the distinct IDs (after the hashing trick, if any)
        inverse  int64[N]  keys[inverse] == ids

``inputs(Pulled(prepared, rows))`` (torch)
    ``rows[t]`` is ``float32[U, D_t]``, the row of every key in table ``t`` (for every
    ``t`` in :attr:`EmbeddingLayout.tables`, from a parameter server while training or a
    serving store). Single-valued fields are gathered, multi-valued ones pooled with
    ``embedding_bag``, sequence fields gathered unpooled (the last ``max_sequence`` values,
    padded and masked). Returns the :class:`~kraken.nn.inputs.ModelInputs` and the leaf
    tensor of each table's rows: after ``backward`` a leaf's ``grad`` holds exactly one
    summed gradient per unique key, ready to push. No tensor the size of the vocabulary
    exists anywhere.

The first-order ("wide") weight of a field comes from a dim-1 table of its own
(``wide_table``) or, with ``wide_column``, from the last column of the embedding row::

    table row   [ e_0 ... e_{D-1} | w ]     float32[U, D + 1]: one key, one probe, one
                  emb (D)          wide      metadata; the model sees emb [B, F, D] and
                                             wide [B, F]; the leaf's gradient keeps the
                                             same columns, so one push updates both

The training binding over a parameter server is :class:`kraken.nn.embedding.EmbeddingLayer`;
a serving replica uses the layout directly over its weight store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kraken.config import Pooling, check_enum, check_int
from kraken.data.base import Batch, Schema
from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs
from kraken.table import TableConfig
from kraken.table.kernels import hash_buckets as bucketize
from kraken.table.kernels import unique_inverse

__all__ = ["EmbeddingLayout", "Prepared", "Pulled"]

# The keyword settings of EmbeddingLayout (after the schema), as saved in a model spec.
_SETTINGS = ("table", "wide_table", "wide_column", "pooling", "sequence_fields",
             "max_sequence", "hash_buckets")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Deduplicated IDs of one batch: ``keys int64[U]``, ``inverse int64[N]`` where ``N``
    is ``B * F`` single-valued IDs followed by each multi-valued field's values."""

    batch: Batch
    keys: np.ndarray
    inverse: np.ndarray


@dataclasses.dataclass(frozen=True)
class Pulled:
    """Rows for a prepared batch, per table name: ``float32[U, D_table]``."""

    prepared: Prepared
    rows: dict[str, np.ndarray]


class EmbeddingLayout:
    """Dedupe, gather and pool for one stream schema (see the module docstring).

    Args:
        schema: the stream's schema (field order defines the ``F`` axis).
        table: the table holding the ``D``-dim embeddings of every field.
        wide_table: a dim-1 table for first-order weights, or None.
        wide_column: the first-order weight is the last column of ``table``'s rows (a row
            of segments ``[embedding (D) | wide (1)]``: one key, one probe, one metadata
            for both); ``table`` then has dim ``D + 1``. Exclusive with ``wide_table``.
        pooling: :class:`~kraken.config.Pooling` (or its name) of multi-valued fields.
        sequence_fields: multi-valued fields also returned unpooled (padded, masked).
        max_sequence: keep at most the last this-many values of a sequence (>= 1).
        hash_buckets: if set, the hashing trick: every ID is replaced by
            ``hash(ID) % hash_buckets`` before the lookup, so distinct IDs may share a row
            (the fixed-size baseline that collisionless tables are compared against).

    Raises :class:`ConfigError` for a setting that does not fit the schema.
    """

    def __init__(self, schema: Schema, *, table: str = "emb", wide_table: str | None = None,
                 wide_column: bool = False, pooling: Pooling | str = Pooling.SUM,
                 sequence_fields: tuple[str, ...] = (), max_sequence: int = 50,
                 hash_buckets: int | None = None) -> None:
        if not isinstance(table, str) or not table:
            raise ConfigError(f"table: expected a table name, got {table!r}")
        if wide_table is not None and (not isinstance(wide_table, str) or wide_table == table):
            raise ConfigError(f"wide_table: expected a table name other than {table!r}, "
                              f"got {wide_table!r}")
        if not isinstance(wide_column, bool):
            raise ConfigError(f"wide_column: expected true or false, got {wide_column!r}")
        if wide_column and wide_table is not None:
            raise ConfigError(f"wide_column: the first-order weight is either a column of "
                              f"{table!r} or the table {wide_table!r}, not both")
        for name in sequence_fields:
            if name not in schema.jagged:
                raise ConfigError(f"sequence field {name!r} is not a multi-valued field "
                                  f"of the stream (multi-valued: {list(schema.jagged)})")
        check_int("max_sequence", max_sequence, lo=1)
        if hash_buckets is not None:
            check_int("hash_buckets", hash_buckets, lo=1)
        self.schema = schema
        self.table, self.wide_table, self.wide_column = table, wide_table, wide_column
        self.pooling = check_enum("pooling", pooling, Pooling)
        self.sequence_fields = tuple(sequence_fields)
        self.max_sequence, self.hash_buckets = max_sequence, hash_buckets

    @property
    def tables(self) -> tuple[str, ...]:
        """Names of the tables whose rows :meth:`inputs` needs: the embedding table, then
        the wide table if any. The one place that says which tables a model reads."""
        return (self.table,) if self.wide_table is None else (self.table, self.wide_table)

    @property
    def has_wide(self) -> bool:
        """Whether :meth:`inputs` gives first-order weights (``ModelInputs.wide``)."""
        return self.wide_column or self.wide_table is not None

    def emb_dim(self, tables: Mapping[str, TableConfig]) -> int:
        """``D``, the embedding dim the model sees: ``table``'s dim, less the wide column."""
        return tables[self.table].dim - int(self.wide_column)

    @property
    def n_fields(self) -> int:
        """``F``: single-valued fields, then the pooled multi-valued ones."""
        return len(self.schema.fields) + len(self.schema.jagged)

    def check_tables(self, tables: Mapping[str, TableConfig]) -> None:
        """Raise :class:`ConfigError` unless ``tables`` holds every table this layout reads,
        the wide table (if any) has dim 1 and a table with a wide column has dim >= 2."""
        for name in self.tables:
            if name not in tables:
                raise ConfigError(f"embedding table {name!r} is not on the PS "
                                  f"(tables: {sorted(tables)})")
        if self.wide_column and tables[self.table].dim < 2:
            raise ConfigError(f"tables.{self.table}.dim: a row of embedding and wide column "
                              f"needs dim >= 2 (D + 1), got {tables[self.table].dim}")
        if self.wide_table is not None and tables[self.wide_table].dim != 1:
            raise ConfigError(f"tables.{self.wide_table}.dim: the wide table must have dim 1, "
                              f"got {tables[self.wide_table].dim}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values; ``EmbeddingLayout(schema, **to_dict())`` rebuilds it.

        ``wide_column`` is written only when set, so a spec without it (written before it
        existed) and a spec of a model with a wide table read alike everywhere."""
        d = {k: getattr(self, k) for k in _SETTINGS if k != "wide_column" or self.wide_column}
        return {**d, "pooling": self.pooling.value, "sequence_fields": list(self.sequence_fields)}

    @classmethod
    def from_dict(cls, schema: Schema, d: Mapping[str, Any],
                  path: str = "embedding") -> EmbeddingLayout:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` naming the bad key."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(d).__name__}")
        extra = sorted(set(d) - set(_SETTINGS))
        if extra:
            raise ConfigError(f"{path}: unknown key(s) {extra}; allowed: {sorted(_SETTINGS)}")
        kw = dict(d)
        if "sequence_fields" in kw:
            if not isinstance(kw["sequence_fields"], (list, tuple)):
                raise ConfigError(f"{path}.sequence_fields: expected a list of field names, "
                                  f"got {kw['sequence_fields']!r}")
            kw["sequence_fields"] = tuple(kw["sequence_fields"])
        try:
            return cls(schema, **kw)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None

    # -- the two steps ---------------------------------------------------------------------

    def prepare(self, batch: Batch) -> Prepared:
        """Deduplicate every ID of ``batch`` (numpy/numba only; safe in a worker thread)."""
        parts = [batch.keys.reshape(-1)] + [batch.jagged[n].values for n in self.schema.jagged]
        ids = np.concatenate(parts) if len(parts) > 1 else parts[0]
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.hash_buckets is not None:
            ids = bucketize(ids, self.hash_buckets)
        keys, inverse = unique_inverse(ids)
        return Prepared(batch=batch, keys=keys, inverse=inverse)

    def inputs(self, pulled: Pulled, *, requires_grad: bool = False,
               ) -> tuple[ModelInputs, dict[str, torch.Tensor]]:
        """The model's inputs and the row leaf ``float32[U, D_t]`` of every table used.

        ``pulled.rows`` must hold every table of :attr:`tables`. With ``requires_grad``
        the leaves track gradients (their ``grad`` is filled by ``backward``).
        """
        p = pulled.prepared
        b = p.batch
        inverse = torch.from_numpy(p.inverse)
        emb, leaf = self._fields(pulled.rows[self.table], inverse, b, requires_grad)
        leaves = {self.table: leaf}
        wide = None
        if self.wide_column:  # [emb (D) | wide (1)]: split the gathered columns
            wide = emb[..., -1]
            emb = emb[..., :-1]
        if self.wide_table is not None:
            w, wleaf = self._fields(pulled.rows[self.wide_table], inverse, b, requires_grad)
            wide = w[..., 0]
            leaves[self.wide_table] = wleaf
        seq_rows = leaf[:, :-1] if self.wide_column else leaf
        sequences = {name: self._sequence(seq_rows, inverse, b, name)
                     for name in self.sequence_fields}
        return (ModelInputs(emb=emb, dense=torch.from_numpy(b.dense), wide=wide,
                            sequences=sequences), leaves)

    # -- internals ---------------------------------------------------------------------

    def _fields(self, rows: np.ndarray, inverse: torch.Tensor, b: Batch,
                requires_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = torch.from_numpy(rows).requires_grad_(requires_grad)
        n_b, n_f = b.keys.shape
        single = leaf.index_select(0, inverse[: n_b * n_f]).view(n_b, n_f, -1)
        pooled = []
        start = n_b * n_f
        for name in self.schema.jagged:
            jag = b.jagged[name]
            idx = inverse[start: start + jag.values.shape[0]]
            start += jag.values.shape[0]
            pooled.append(F.embedding_bag(idx, leaf, torch.from_numpy(jag.offsets[:-1]),
                                          mode=self.pooling.value)[:, None, :])
        return (torch.cat([single] + pooled, dim=1) if pooled else single), leaf

    def _sequence(self, leaf: torch.Tensor, inverse: torch.Tensor, b: Batch,
                  name: str) -> tuple[torch.Tensor, torch.Tensor]:
        start = b.keys.size
        for other in self.schema.jagged:
            if other == name:
                break
            start += b.jagged[other].values.shape[0]
        jag = b.jagged[name]
        lengths = np.minimum(jag.lengths, self.max_sequence)
        width = max(int(lengths.max(initial=0)), 1)
        first = jag.offsets[1:] - lengths  # keep the last `lengths` values of each sample
        cols = np.arange(width)
        mask = cols[None, :] < lengths[:, None]
        pos = np.where(mask, first[:, None] + cols[None, :], 0)
        idx = inverse[start: start + max(jag.values.shape[0], 1)]
        gathered = leaf[idx[torch.from_numpy(pos)]] if jag.values.shape[0] else (
            torch.zeros(len(jag), width, leaf.shape[1]))
        m = torch.from_numpy(mask)
        return gathered * m[..., None], m
