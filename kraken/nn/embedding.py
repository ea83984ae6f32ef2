"""``EmbeddingLayer``: an :class:`~kraken.nn.layout.EmbeddingLayout` bound to a parameter server.

The layout does the pure work (dedupe, gather, pool); this binding pulls the rows it
needs from a :class:`~kraken.ps.protocol.ParameterServer` and, after ``backward``, pushes
one summed gradient per unique row back. The work is split so a pipeline can overlap it
with compute::

    prepare (numpy, thread-safe, no PS access) -> pull (PS access)
        -> forward (torch) -> push (PS access)

A serving replica reads rows from its own store and uses the layout directly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kraken.config import Pooling
from kraken.data.base import Batch, Schema
from kraken.nn.inputs import ModelInputs
from kraken.nn.layout import EmbeddingLayout, Prepared, Pulled
from kraken.ps.protocol import ParameterServer

__all__ = ["EmbeddingLayer", "Prepared", "Pulled"]


class EmbeddingLayer(nn.Module):
    """Turns a :class:`Batch` into :class:`ModelInputs` using rows held by a PS.

    Args:
        ps: the parameter server; it must hold every table the layout reads.
        schema, table, wide_table, wide_column, pooling, sequence_fields, max_sequence,
        hash_buckets:
            the :class:`~kraken.nn.layout.EmbeddingLayout` (see there).

    Raises :class:`~kraken.errors.ConfigError` for settings that do not fit the schema
    or the PS's tables.
    """

    def __init__(self, ps: ParameterServer, schema: Schema, *, table: str = "emb",
                 wide_table: str | None = None, wide_column: bool = False,
                 pooling: Pooling | str = Pooling.SUM,
                 sequence_fields: tuple[str, ...] = (), max_sequence: int = 50,
                 hash_buckets: int | None = None) -> None:
        super().__init__()
        layout = EmbeddingLayout(schema, table=table, wide_table=wide_table,
                                 wide_column=wide_column, pooling=pooling,
                                 sequence_fields=sequence_fields, max_sequence=max_sequence,
                                 hash_buckets=hash_buckets)
        layout.check_tables(ps.tables)
        self.ps, self.layout = ps, layout
        self.dim = layout.emb_dim(ps.tables)  # D, without a wide column
        self._pending: list[tuple[str, np.ndarray, torch.Tensor]] = []

    # The layout's settings, read through (the trainer and the serving spec use them).
    @property
    def schema(self) -> Schema:
        return self.layout.schema

    @property
    def table(self) -> str:
        return self.layout.table

    @property
    def wide_table(self) -> str | None:
        return self.layout.wide_table

    @property
    def wide_column(self) -> bool:
        return self.layout.wide_column

    @property
    def pooling(self) -> Pooling:
        return self.layout.pooling

    @property
    def sequence_fields(self) -> tuple[str, ...]:
        return self.layout.sequence_fields

    @property
    def max_sequence(self) -> int:
        return self.layout.max_sequence

    @property
    def hash_buckets(self) -> int | None:
        return self.layout.hash_buckets

    @property
    def n_fields(self) -> int:
        return self.layout.n_fields

    def prepare(self, batch: Batch) -> Prepared:
        """Deduplicate every ID of ``batch`` (numpy/numba only; safe in a worker thread)."""
        return self.layout.prepare(batch)

    def pull(self, prepared: Prepared, *, train: bool, now: int | None = None) -> Pulled:
        """Pull the unique rows of every table the layout reads (one request per shard)."""
        rows = self.ps.pull({n: prepared.keys for n in self.layout.tables}, train=train,
                            now=now)
        return Pulled(prepared=prepared, rows=rows)

    def forward(self, pulled: Pulled) -> ModelInputs:  # type: ignore[override]
        """Gather and pool; remembers the row leaves for :meth:`push` when training."""
        inputs, leaves = self.layout.inputs(pulled, requires_grad=self.training)
        if self.training:
            keys = pulled.prepared.keys
            self._pending = [(name, keys, leaf) for name, leaf in leaves.items()]
        return inputs

    def push(self, now: int) -> None:
        """Push the gradient of every row used by the last training forward, then forget it."""
        grads = {table: (keys, leaf.grad.numpy()) for table, keys, leaf in self._pending
                 if leaf.grad is not None}
        self._pending = []
        if grads:
            self.ps.push(grads, now)

    def pending_grads(self) -> list[torch.Tensor]:
        """Row gradients the next :meth:`push` would send (for finiteness checks)."""
        return [leaf.grad for _, _, leaf in self._pending if leaf.grad is not None]

    def discard(self) -> None:
        """Forget the last forward's rows: the next :meth:`push` sends nothing."""
        self._pending = []
