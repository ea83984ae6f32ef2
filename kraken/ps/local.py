"""``LocalPS``: the in-process parameter server, a dict of :class:`SparseTable`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kraken.errors import CheckpointMismatchError, InputError
from kraken.table import SparseTable, TableConfig, TableDelta, TableStats
from kraken.table.codec import decode
from kraken.types import F32, Keys

__all__ = ["LocalPS"]


class LocalPS:
    """All tables in this process; thread safe per table (see :class:`SparseTable`)."""

    def __init__(self, tables: dict[str, TableConfig]) -> None:
        if not tables:
            raise InputError("a parameter server needs at least one table")
        self._tables = {name: SparseTable(cfg) for name, cfg in tables.items()}

    def _get(self, table: str) -> SparseTable:
        try:
            return self._tables[table]
        except KeyError:
            raise InputError(f"unknown table {table!r}; tables are {sorted(self._tables)}"
                             ) from None

    @property
    def tables(self) -> dict[str, TableConfig]:
        return {name: t.config for name, t in self._tables.items()}

    def table(self, name: str) -> SparseTable:
        """Direct access to one table (in-process only)."""
        return self._get(name)

    def pull(self, table: str, keys: Keys, *, train: bool = False,
             now: int | None = None) -> F32:
        return self._get(table).lookup(keys, train=train, now=now)

    def push(self, table: str, keys: Keys, grads: F32, now: int) -> None:
        self._get(table).apply_gradients(keys, grads, now)

    def evict(self, now: int) -> dict[str, int]:
        return {name: int(t.evict(now).shape[0]) for name, t in self._tables.items()}

    def stats(self) -> dict[str, TableStats]:
        return {name: t.stats() for name, t in self._tables.items()}

    def delta(self, table: str, since: int) -> TableDelta:
        return self._get(table).touched_since(since)

    def snapshot(self, table: str) -> TableDelta:
        t = self._get(table)
        rows = t.export()
        w = decode(rows.weights, t.config.precision)
        return TableDelta(since=0, version=rows.version, keys=rows.keys, weights=w,
                          evicted=np.empty(0, dtype=np.int64))

    def save(self, directory: str | os.PathLike[str]) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, t in self._tables.items():
            t.save(d / f"{name}.ktab")

    def load(self, directory: str | os.PathLike[str]) -> None:
        """Load every table from ``directory``; all files are validated before any swap."""
        d = Path(directory)
        missing = [n for n in self._tables if not (d / f"{n}.ktab").is_file()]
        if missing:
            raise CheckpointMismatchError(f"{d}: no saved table(s) {missing}")
        fresh = {}
        for name, t in self._tables.items():
            fresh[name] = SparseTable(t.config)
            fresh[name].load(d / f"{name}.ktab")
        self._tables = fresh
