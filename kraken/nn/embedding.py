"""Embedding rows from a parameter server, differentiably: dedupe, pull, gather, pool, push.

Per batch and table, every ID of every sparse field is deduplicated once (O(N), in
numba), the ``U`` unique rows are pulled once into a leaf tensor ``float32[U, D]``,
and the per-field embeddings are gathered (single-valued fields) or pooled with
``embedding_bag`` (multi-valued fields) from it. After ``backward`` the leaf's
gradient holds exactly one summed gradient per unique row, which :meth:`push`
sends to the PS. No tensor the size of the vocabulary exists anywhere.

The work is split so a pipeline can overlap it with compute:
``prepare`` (numpy, thread-safe, no PS access) -> ``pull`` (PS access) ->
``forward`` (torch) -> ``push`` (PS access).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kraken.data.base import Batch, Schema
from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs
from kraken.ps.protocol import ParameterServer
from kraken.table.kernels import hash_buckets as bucketize
from kraken.table.kernels import unique_inverse

__all__ = ["EmbeddingLayer", "Prepared", "Pulled"]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Deduplicated IDs of one batch: ``keys int64[U]``, ``inverse int64[N]`` where ``N``
    is ``B * F`` single-valued IDs followed by each multi-valued field's values."""

    batch: Batch
    keys: np.ndarray
    inverse: np.ndarray


@dataclasses.dataclass(frozen=True)
class Pulled:
    """Rows pulled for a prepared batch, per table name: ``float32[U, D_table]``."""

    prepared: Prepared
    rows: dict[str, np.ndarray]


class EmbeddingLayer(nn.Module):
    """Turns a :class:`Batch` into :class:`ModelInputs` using rows held by a PS.

    Args:
        ps: the parameter server.
        schema: the stream's schema (field order defines the ``F`` axis).
        table: the table holding the ``D``-dim embeddings of every field.
        wide_table: a dim-1 table for first-order weights, or None.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued fields.
        sequence_fields: multi-valued fields also returned unpooled (padded, masked).
        max_sequence: keep at most the last this-many values of a sequence.
        hash_buckets: if set, the hashing trick: every ID is replaced by
            ``hash(ID) % hash_buckets`` before the lookup, so distinct IDs may share a row
            (the fixed-size baseline that collisionless tables are compared against).
    """

    def __init__(self, ps: ParameterServer, schema: Schema, *, table: str = "emb",
                 wide_table: str | None = None, pooling: str = "sum",
                 sequence_fields: tuple[str, ...] = (), max_sequence: int = 50,
                 hash_buckets: int | None = None) -> None:
        super().__init__()
        tables = ps.tables
        for name in (table, wide_table):
            if name is not None and name not in tables:
                raise ConfigError(f"embedding table {name!r} is not on the PS "
                                  f"(tables: {sorted(tables)})")
        if wide_table is not None and tables[wide_table].dim != 1:
            raise ConfigError(f"tables.{wide_table}.dim: the wide table must have dim 1, "
                              f"got {tables[wide_table].dim}")
        if pooling not in ("sum", "mean"):
            raise ConfigError(f"pooling: expected 'sum' or 'mean', got {pooling!r}")
        for name in sequence_fields:
            if name not in schema.jagged:
                raise ConfigError(f"sequence field {name!r} is not a multi-valued field "
                                  f"of the stream (multi-valued: {list(schema.jagged)})")
        self.ps, self.schema = ps, schema
        self.table, self.wide_table = table, wide_table
        self.pooling, self.sequence_fields, self.max_sequence = (
            pooling, tuple(sequence_fields), max_sequence)
        if hash_buckets is not None and hash_buckets < 1:
            raise ConfigError(f"hash_buckets: must be >= 1, got {hash_buckets}")
        self.hash_buckets = hash_buckets
        self.dim = tables[table].dim
        self._pending: list[tuple[str, np.ndarray, torch.Tensor]] = []

    @property
    def n_fields(self) -> int:
        return len(self.schema.fields) + len(self.schema.jagged)

    def prepare(self, batch: Batch) -> Prepared:
        """Deduplicate every ID of ``batch`` (numpy/numba only; safe in a worker thread)."""
        parts = [batch.keys.reshape(-1)] + [batch.jagged[n].values for n in self.schema.jagged]
        ids = np.concatenate(parts) if len(parts) > 1 else parts[0]
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.hash_buckets is not None:
            ids = bucketize(ids, self.hash_buckets)
        keys, inverse = unique_inverse(ids)
        return Prepared(batch=batch, keys=keys, inverse=inverse)

    def pull(self, prepared: Prepared, *, train: bool, now: int | None = None) -> Pulled:
        """Pull the unique rows from every table this layer uses."""
        names = [self.table] + ([self.wide_table] if self.wide_table else [])
        rows = {n: self.ps.pull(n, prepared.keys, train=train, now=now) for n in names}
        return Pulled(prepared=prepared, rows=rows)

    def forward(self, pulled: Pulled) -> ModelInputs:  # type: ignore[override]
        """Gather and pool; remembers the row leaves for :meth:`push` when training."""
        p = pulled.prepared
        b = p.batch
        inverse = torch.from_numpy(p.inverse)
        emb, leaf = self._fields(pulled.rows[self.table], inverse, b)
        pending = [(self.table, p.keys, leaf)]
        wide = None
        if self.wide_table:
            w, wleaf = self._fields(pulled.rows[self.wide_table], inverse, b)
            wide = w[..., 0]
            pending.append((self.wide_table, p.keys, wleaf))
        sequences = {name: self._sequence(leaf, inverse, b, name) for name in self.sequence_fields}
        if self.training:
            self._pending = pending
        return ModelInputs(emb=emb, dense=torch.from_numpy(b.dense), wide=wide,
                           sequences=sequences)

    def push(self, now: int) -> None:
        """Push the gradient of every row used by the last training forward, then forget it."""
        for table, keys, leaf in self._pending:
            if leaf.grad is not None:
                self.ps.push(table, keys, leaf.grad.numpy(), now)
        self._pending = []

    def pending_grads(self) -> list[torch.Tensor]:
        """Row gradients the next :meth:`push` would send (for finiteness checks)."""
        return [leaf.grad for _, _, leaf in self._pending if leaf.grad is not None]

    def discard(self) -> None:
        """Forget the last forward's rows: the next :meth:`push` sends nothing."""
        self._pending = []

    # -- internals ---------------------------------------------------------------------

    def _fields(self, rows: np.ndarray, inverse: torch.Tensor,
                b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = torch.from_numpy(rows).requires_grad_(self.training)
        n_b, n_f = b.keys.shape
        single = leaf.index_select(0, inverse[: n_b * n_f]).view(n_b, n_f, -1)
        pooled = []
        start = n_b * n_f
        for name in self.schema.jagged:
            jag = b.jagged[name]
            idx = inverse[start: start + jag.values.shape[0]]
            start += jag.values.shape[0]
            pooled.append(F.embedding_bag(idx, leaf, torch.from_numpy(jag.offsets[:-1]),
                                          mode=self.pooling)[:, None, :])
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
