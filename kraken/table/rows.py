"""The values a :class:`~kraken.table.table.SparseTable` hands out: stats, deltas, rows.

Versions: every verb that changes rows in any column (weights, optimizer state, access
metadata) or evicts stamps them with the table's current version; the first change after
a reader has seen a version opens the next one. So a version names a set of changes,
``(since, version]`` is exactly the changes after ``since`` up to ``version``, and reading
never moves the version.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.types import F32, Keys

__all__ = ["COUNTERS", "TableDelta", "TableRows", "TableStats"]

COUNTERS = ("lookups", "train_lookups", "admitted", "not_admitted", "rejected_full",
            "evicted", "updated_rows", "dropped_gradients")


@dataclasses.dataclass(frozen=True)
class TableStats:
    """A snapshot of a table's size and counters (counters are cumulative).

    ``version`` is the version of the latest change (0 before any), ``clock`` the
    largest ``now`` any verb has been given, ``memory_bytes`` index + touched arena rows
    + admission sketch.
    """

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

    ``count`` is the access count, zeros from a table that keeps none (no eviction policy
    reads it); ``stamp`` the table version of the row's last change in any column.

    ``version`` is the table version the rows are complete up to (for ``touched_since``).
    """

    keys: Keys
    weights: np.ndarray
    state: F32
    last_seen: np.ndarray
    count: F32
    stamp: np.ndarray
    version: int = 0
