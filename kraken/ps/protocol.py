"""The parameter-server boundary: the handful of verbs training and serving code talk to.

Payloads are flat and columnar per table (``keys int64[N]``, ``rows float32[N, D]``), and
one call carries every table of a batch, so a batch costs one round trip per shard. The
invariants below hold for every implementation: :class:`~kraken.ps.LocalPS` (one
in-process shard, the embedded default) and :class:`~kraken.ps.ShardedPS` over
in-process shards or over shard processes reached by gRPC. A contract suite
(``tests/contracts/test_ps_contract.py``) runs the same checks over all of them.

- ``pull({table: keys}, train=, now=) -> {table: float32[N, D]}``: the row of each key
  (the table's default vector for keys without a row). With ``train`` absent keys go
  through admission and every key counts as an access at ``now``. Safe to retry: a
  remote shard's client gives each training pull a request id, reused by its retries,
  and a shard answers a repeated id from its window of recent replies without executing
  it again (see :mod:`kraken.ps.shard`; in process nothing is retried, so no id is sent
  and no reply is kept).
- ``push({table: (keys, grads)}, now)``: one optimizer step per table; duplicate keys are
  summed, keys without a row are dropped. Applied wholly or not at all *per shard* (not
  across shards). Pushes from many writers are all applied, in arrival order per shard,
  so two workers pushing the same row both land in its optimizer state. Retried with the
  same request id, a push is applied once. With ``push_staleness = k > 0`` a push may
  still be in flight while up to ``k`` later batches pull; ``flush()`` waits for all.
- Time and eviction belong to the shards: each shard's clock is the largest ``now`` it
  has been sent, and each evicts on its own cadence. ``evict(now)`` runs a pass on
  every shard now (for tools and tests; training never needs it).
- ``stats() -> {table: TableStats}`` summed over shards; ``shard_stats()`` per shard.
- ``delta(table, since) -> tuple[TableDelta, ...]``: per shard ``s``, rows changed and
  keys evicted after ``since[s]``. A delta cursor is a version vector, one entry per
  shard; ``snapshot(table)`` gives every live row of every shard as a delta from
  nothing, and ``[d.version for d in snapshot]`` continues from it.
- ``save(directory) -> layout`` (prepare): every shard writes its slice of every table
  under ``directory/shard-<i>/`` and reports its files and checksums; a shard that
  fails fails the save. The caller commits (writes the manifest holding ``layout``).
  ``load(directory, layout, checkpoint)`` restores every shard from it, re-routing
  rows when the layout has a different number of shards. Incremental checkpoints:
  ``save(directory, base=layout)`` writes only what changed since the save that
  returned ``layout`` where it can (the result says ``"incremental"``), and
  ``load(..., deltas=[(directory, layout), ...])`` applies such saves in order.
- ``close()``: release connections and threads; a shard that stays unreachable past
  the retry budget raises :class:`~kraken.errors.TransportError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from kraken.table import TableConfig, TableDelta, TableStats
from kraken.types import F32, Keys

__all__ = ["ParameterServer"]


@runtime_checkable
class ParameterServer(Protocol):
    """What the trainer, the embedding binding and the publisher need from a PS."""

    @property
    def tables(self) -> dict[str, TableConfig]:
        """Name -> config of every table served (``capacity``: all shards together)."""
        ...

    @property
    def n_shards(self) -> int: ...

    def pull(self, keys: Mapping[str, Keys], *, train: bool = False,
             now: int | None = None) -> dict[str, F32]: ...

    def push(self, grads: Mapping[str, tuple[Keys, F32]], now: int) -> None: ...

    def flush(self) -> None: ...

    def evict(self, now: int) -> dict[str, int]: ...

    def stats(self) -> dict[str, TableStats]: ...

    def shard_stats(self) -> list[dict[str, TableStats]]: ...

    def delta(self, table: str, since: Sequence[int]) -> tuple[TableDelta, ...]: ...

    def snapshot(self, table: str) -> tuple[TableDelta, ...]: ...

    def save(self, directory: str | os.PathLike[str],
             base: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def load(self, directory: str | os.PathLike[str], layout: dict[str, Any],
             checkpoint: str,
             deltas: Sequence[tuple[str | os.PathLike[str], dict[str, Any]]] = ()) -> None: ...

    def close(self) -> None: ...
