"""The sparse-table file: one ``kraken.arrayfile`` holding a whole table, and nothing else.

Layout (every part checksummed by the arrayfile container; written atomically)::

    meta   {"kind": "kraken.sparse_table", "config": TableConfig.to_dict(),
            "clock": int, "version": int, "rng": numpy bit-generator state,
            "counters": {name: int}}
    keys       int64[L]        weights  float32/float16/uint16[L, D]
    state      float32[L, S]   last_seen int32[L]   count float32[L]   stamp int32[L]
    sketch     uint32[depth, width]  (only with CountMin admission)

This module knows the format; :class:`~kraken.table.table.SparseTable` keeps the
``save`` / ``load`` / ``from_file`` verbs and swaps a validated :class:`TableFile` in.
Errors are :class:`~kraken.errors.CheckpointError` subclasses naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from kraken.arrayfile import read_arrays, write_arrays
from kraken.errors import CheckpointMismatchError, ConfigError, CorruptCheckpointError
from kraken.table.config import TableConfig
from kraken.table.rows import COUNTERS, TableRows

__all__ = ["FILE_KIND", "TableFile", "check_fits", "merge_table_files", "read_table_file",
           "write_table_file"]

FILE_KIND = "kraken.sparse_table"
_ROW_ARRAYS = ("keys", "weights", "state", "last_seen", "count", "stamp")


@dataclasses.dataclass(frozen=True)
class TableFile:
    """Everything a table file holds: config, rows, admission sketch, clock, version,
    generator state and counters (``counters`` has exactly the names of ``COUNTERS``)."""

    config: TableConfig
    rows: TableRows
    sketch: np.ndarray | None
    clock: int
    version: int
    rng_state: dict[str, Any]
    counters: dict[str, int]


def write_table_file(path: str | os.PathLike[str], f: TableFile) -> None:
    """Atomically write ``f`` to ``path`` (temporary file, fsync, rename)."""
    arrays = {name: getattr(f.rows, name) for name in _ROW_ARRAYS}
    if f.sketch is not None:
        arrays["sketch"] = f.sketch
    meta = {"kind": FILE_KIND, "config": f.config.to_dict(), "clock": f.clock,
            "version": f.version, "rng": f.rng_state, "counters": f.counters}
    write_arrays(path, meta, arrays)


def read_table_file(path: str | os.PathLike[str]) -> TableFile:
    """Parse the table file at ``path``; raises :class:`CorruptCheckpointError` (or another
    :class:`~kraken.errors.CheckpointError`) if it is not a readable sparse-table file.

    Only the container and the metadata are checked here; whether the rows are
    consistent and fit a table is checked when they are loaded into one.
    """
    meta, arrays = read_arrays(path)
    missing = [k for k in _ROW_ARRAYS if k not in arrays]
    if meta.get("kind") != FILE_KIND or missing:
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
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpointError(f"{path}: unreadable table metadata: {exc}") from exc
    rows = TableRows(**{k: arrays[k] for k in _ROW_ARRAYS})
    return TableFile(config=config, rows=rows, sketch=arrays.get("sketch"), clock=clock,
                     version=version, rng_state=rng_state, counters=counters)


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
    config apart from ``capacity``.
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
    return TableFile(config=files[0].config, rows=rows, sketch=sketch,
                     clock=max(f.clock for f in files), version=max(f.version for f in files),
                     rng_state=files[0].rng_state, counters=dict.fromkeys(COUNTERS, 0))
