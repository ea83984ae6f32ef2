"""The parameter-server boundary: the handful of verbs training code talks to.

Payloads are flat and columnar (``keys int64[N]``, ``rows float32[N, D]``). The
invariant next to each verb holds for every implementation: the in-process
:class:`~kraken.ps.local.LocalPS` (the embedded default) and the gRPC client.

- ``pull(table, keys, train=, now=)`` -> ``float32[N, D]``: row of each key (default
  vector for keys without a row). With ``train`` absent keys go through admission.
- ``push(table, keys, grads, now)``: one optimizer step; duplicate keys are summed,
  keys without a row are dropped. Applied wholly or not at all.
- ``evict(now)`` -> evicted count per table.
- ``stats()`` -> ``TableStats`` per table.
- ``delta(table, since)`` -> ``TableDelta``: rows changed and keys evicted after ``since``.
- ``snapshot(table)`` -> ``TableDelta``: every live row (float32 weights) as a delta from
  nothing (``since=0``, no evictions); ``delta(table, snapshot.version)`` continues from it.
- ``save(dir)`` / ``load(dir)``: every table, atomically per table file.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from kraken.table import TableConfig, TableDelta, TableStats
from kraken.types import F32, Keys

__all__ = ["ParameterServer"]


@runtime_checkable
class ParameterServer(Protocol):
    """What the trainer and the embedding modules need from a parameter server."""

    @property
    def tables(self) -> dict[str, TableConfig]:
        """Name -> config of every table served."""
        ...

    def pull(self, table: str, keys: Keys, *, train: bool = False,
             now: int | None = None) -> F32: ...

    def push(self, table: str, keys: Keys, grads: F32, now: int) -> None: ...

    def evict(self, now: int) -> dict[str, int]: ...

    def stats(self) -> dict[str, TableStats]: ...

    def delta(self, table: str, since: int) -> TableDelta: ...

    def snapshot(self, table: str) -> TableDelta: ...

    def save(self, directory: str | os.PathLike[str]) -> None: ...

    def load(self, directory: str | os.PathLike[str]) -> None: ...
