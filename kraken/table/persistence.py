"""The sparse-table file: one ``kraken.arrayfile`` holding a whole table, and nothing else.

Layout (every part checksummed by the arrayfile container; written atomically)::

    meta   {"kind": "kraken.sparse_table", "config": TableConfig.to_dict(),
            "clock": int, "version": int, "rng": numpy bit-generator state,
            "counters": {name: int}}
    keys       int64[L]        weights  float32/float16/uint16[L, D]
    state      float32[L, S]   last_seen int32[L]   stamp int32[L]
    count      float32[L]      (only from a table that keeps access counts, i.e. with an
                               eviction policy that reads them; absent reads as zeros)
    sketch     uint32[depth, width]  (only with CountMin admission)

``stamp`` is the table version of the row's last change in any column (files written
before the table kept one version per row hold the version of the last change of the
weights there: loading either gives the same table, since every version in a file is at
most its ``version`` and a loaded table answers no cursor older than that). Files written
before ``count`` became optional always hold it; they load unchanged.

An incremental file (kind ``kraken.sparse_table_delta``, meta ``"since": int``) has the
same layout but holds only the rows changed after table version ``since`` (any column:
weights, optimizer state, ``last_seen``, ``count``), plus ``evicted int64[E]``, the keys
evicted since then and absent now. Applying it to the table as it was at ``since``
(erase ``evicted``, upsert the rows, take clock, version, generator state, counters and
sketch from the file) gives the table as it was when the file was written.

Rows are written in arena order, streamed from the arena in chunks (no full copy).

This module knows the format; :class:`~kraken.table.table.SparseTable` keeps the
``save`` / ``load`` / ``from_file`` verbs (:mod:`kraken.table.files`) and swaps a
validated :class:`TableFile` in.
Errors are :class:`~kraken.errors.CheckpointError` subclasses naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from kraken.arrayfile import After, Chunked, Into, read_arrays, read_header, write_arrays
from kraken.errors import CheckpointMismatchError, ConfigError, CorruptCheckpointError
from kraken.table.config import TableConfig
from kraken.table.rows import COUNTERS, TableRows

__all__ = ["DELTA_KIND", "FILE_KIND", "TableFile", "check_fits", "merge_table_files",
           "read_table_config", "read_table_file", "write_table_file"]

FILE_KIND = "kraken.sparse_table"
DELTA_KIND = "kraken.sparse_table_delta"
_ROW_ARRAYS = ("keys", "weights", "state", "last_seen", "count", "stamp")
_OPTIONAL = ("count",)


@dataclasses.dataclass(frozen=True)
class TableFile:
    """Everything a table file holds: config, rows, admission sketch, clock, version,
    generator state and counters (``counters`` has exactly the names of ``COUNTERS``).

    ``since`` is ``None`` for a full file; for an incremental one it is the version the
    rows changed after, and ``evicted: int64[E]`` the keys evicted since then."""

    config: TableConfig
    rows: TableRows
    sketch: np.ndarray | None
    clock: int
    version: int
    rng_state: dict[str, Any]
    counters: dict[str, int]
    since: int | None = None
    evicted: np.ndarray | None = None

    @property
    def incremental(self) -> bool:
        return self.since is not None


def write_table_file(path: str | os.PathLike[str], f: TableFile,
                     columns: dict[str, np.ndarray | Chunked] | None = None) -> None:
    """Atomically write ``f`` to ``path`` (temporary file, streamed, fsync, rename).

    ``columns`` (name -> array or :class:`~kraken.arrayfile.Chunked` producer, for every
    row column) replaces ``f.rows``, so a table can stream its rows from its arena.
    """
    arrays: dict[str, np.ndarray | Chunked] = dict(columns) if columns is not None else \
        {name: getattr(f.rows, name) for name in _ROW_ARRAYS}
    if f.sketch is not None:
        arrays["sketch"] = f.sketch
    meta: dict[str, Any] = {"kind": FILE_KIND, "config": f.config.to_dict(), "clock": f.clock,
                            "version": f.version, "rng": f.rng_state, "counters": f.counters}
    if f.since is not None:
        meta["kind"], meta["since"] = DELTA_KIND, int(f.since)
        arrays["evicted"] = np.empty(0, np.int64) if f.evicted is None else f.evicted
    write_arrays(path, meta, arrays)


def read_table_config(path: str | os.PathLike[str]) -> TableConfig:
    """The config a table file was saved with, from its header alone."""
    meta = read_header(path).meta
    if meta.get("kind") not in (FILE_KIND, DELTA_KIND):
        raise CorruptCheckpointError(f"{path}: not a sparse-table file (kind "
                                     f"{meta.get('kind')!r})")
    try:
        return TableConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CorruptCheckpointError(f"{path}: unusable table config: {exc}") from exc


def read_table_file(path: str | os.PathLike[str], into: Into | None = None,
                    after: After | None = None) -> TableFile:
    """Parse the table file at ``path`` (``into`` / ``after``: see
    :func:`~kraken.arrayfile.read_arrays`); raises :class:`CorruptCheckpointError` (or another
    :class:`~kraken.errors.CheckpointError`) if it is not a readable sparse-table file.

    Only the container and the metadata are checked here; whether the rows are
    consistent and fit a table is checked when they are loaded into one.
    """
    meta, arrays = read_arrays(path, into, after)
    missing = [k for k in _ROW_ARRAYS if k not in arrays and k not in _OPTIONAL]
    delta = meta.get("kind") == DELTA_KIND
    if delta and "evicted" not in arrays:
        missing.append("evicted")
    if meta.get("kind") not in (FILE_KIND, DELTA_KIND) or missing:
        raise CorruptCheckpointError(
            f"{path}: not a sparse-table file (kind {meta.get('kind')!r}, missing {missing})")
    try:
        config = TableConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CorruptCheckpointError(f"{path}: unusable table config: {exc}") from exc
    try:
        clock, version = int(meta["clock"]), int(meta["version"])
        counters = {k: int(meta["counters"].get(k, 0)) for k in COUNTERS}
        rng_state = meta["rng"]
        since = int(meta["since"]) if delta else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpointError(f"{path}: unreadable table metadata: {exc}") from exc
    if "count" not in arrays:
        arrays["count"] = np.zeros(np.shape(arrays["keys"])[:1], dtype=np.float32)
    rows = TableRows(**{k: arrays[k] for k in _ROW_ARRAYS})
    return TableFile(config=config, rows=rows, sketch=arrays.get("sketch"), clock=clock,
                     version=version, rng_state=rng_state, counters=counters, since=since,
                     evicted=arrays.get("evicted") if delta else None)


def check_fits(path: str | os.PathLike[str], saved: TableConfig, config: TableConfig) -> None:
    """Raise :class:`CheckpointMismatchError` unless rows saved under ``saved`` can be
    loaded into a table of ``config`` (same dim, precision, optimizer and state width)."""
    for what, mine, theirs in (("dim", config.dim, saved.dim),
                               ("precision", config.precision.value, saved.precision.value),
                               ("optimizer", config.optimizer.kind, saved.optimizer.kind),
                               ("state width", config.state_width, saved.state_width)):
        if mine != theirs:
            raise CheckpointMismatchError(f"{path}: {what} is {theirs!r} in the file, "
                                          f"{mine!r} in this table")


def merge_table_files(files: list[TableFile],
                      select: Callable[[np.ndarray], np.ndarray] | None = None) -> TableFile:
    """One table's contents from several slices of it (as shards wrote them), keeping the
    rows whose keys ``select(keys) -> bool[L]`` keeps (all rows without ``select``).

    What carries over: every kept row exactly (weights, optimizer state, ``last_seen``,
    ``count``, ``stamp``); the clock and the version as the largest of the slices'; the
    admission sketch as the element-wise sum of the slices' sketches, saturating, which
    still never under-counts a key (each slice counted only its own keys); the first
    slice's generator state. Cumulative counters restart at zero: they describe the
    slices as they were, not the new split. Slices must have distinct keys and the same
    config apart from ``capacity``. Incremental slices merge into an incremental file
    (their evicted keys that ``select`` keeps, concatenated); full and incremental
    slices do not mix.
    """
    if not files:
        raise CheckpointMismatchError("no table files to merge")
    parts = []
    for f in files:
        keep = slice(None) if select is None else np.asarray(select(f.rows.keys), dtype=bool)
        parts.append({name: getattr(f.rows, name)[keep] for name in _ROW_ARRAYS})
    rows = TableRows(**{name: np.concatenate([p[name] for p in parts])
                        for name in _ROW_ARRAYS})
    sketches = [f.sketch for f in files if f.sketch is not None]
    sketch = None
    if sketches:
        if len(sketches) != len(files) or len({s.shape for s in sketches}) != 1:
            raise CheckpointMismatchError("table slices have different admission sketches")
        total = np.sum([s.astype(np.uint64) for s in sketches], axis=0)
        limit = np.iinfo(sketches[0].dtype).max
        sketch = np.minimum(total, limit).astype(sketches[0].dtype)
    since = {f.since for f in files}
    if len(since) != 1 and None in since:
        raise CheckpointMismatchError("cannot merge full and incremental table slices")
    evicted = None
    if None not in since:
        ev = [f.evicted if select is None else f.evicted[np.asarray(select(f.evicted), bool)]
              for f in files if f.evicted is not None]
        evicted = np.concatenate(ev) if ev else np.empty(0, np.int64)
    return TableFile(config=files[0].config, rows=rows, sketch=sketch,
                     clock=max(f.clock for f in files), version=max(f.version for f in files),
                     rng_state=files[0].rng_state, counters=dict.fromkeys(COUNTERS, 0),
                     since=None if None in since else min(since), evicted=evicted)
