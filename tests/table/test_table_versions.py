"""Versions: reads change nothing, every change after a read is newer than what it saw."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import kraken
from kraken.table import TableConfig


def _changed_table() -> kraken.SparseTable:
    t = kraken.SparseTable(TableConfig(dim=2, capacity=50, eviction=(kraken.TTL(3),)))
    t.lookup(np.arange(10), train=True, now=1)
    t.apply_gradients(np.arange(5), np.ones((5, 2), np.float32), now=2)
    assert t.evict(now=5).tolist() == [5, 6, 7, 8, 9]  # 0..4 were updated at now=2
    t.assign(np.array([7, 8]), np.zeros((2, 2), np.float32), now=6)
    return t


def _snapshot(t: kraken.SparseTable) -> tuple:
    rows = t.export()
    order = np.argsort(rows.keys)
    arrays = {f.name: getattr(rows, f.name) for f in dataclasses.fields(rows)
              if f.name != "version"}
    return rows.version, {k: v[order].tolist() for k, v in arrays.items()}


def test_reads_change_nothing(tmp_path: Path) -> None:
    t = _changed_table()
    version, rows = _snapshot(t)
    stats = t.stats()
    delta = t.touched_since(0)
    for _ in range(3):
        assert t.touched_since(0).version == delta.version == version == stats.version
        assert t.touched_since(0).keys.tolist() == delta.keys.tolist()
        assert t.touched_since(0).evicted.tolist() == delta.evicted.tolist()
        t.save(tmp_path / "t.ktab")
        t.contains(np.arange(20))
        assert _snapshot(t) == (version, rows)
        assert t.stats() == stats


def test_a_change_after_a_read_is_newer_and_unread_changes_share_a_version() -> None:
    t = _changed_table()
    seen = t.touched_since(0).version
    t.lookup(np.array([30]), train=True, now=7)
    t.apply_gradients(np.array([30]), np.ones((1, 2), np.float32), now=7)
    t.assign(np.array([31]), np.ones((1, 2), np.float32), now=7)
    d = t.touched_since(seen)
    assert d.version == seen + 1  # three changes, no read in between: one version
    assert sorted(d.keys.tolist()) == [30, 31]
    assert t.touched_since(d.version).keys.size == 0
    # a version from stats or export is a cursor as well
    t.lookup(np.array([32]), train=True, now=8)
    cursor = t.stats().version
    t.lookup(np.array([33]), train=True, now=8)
    assert t.touched_since(cursor).keys.tolist() == [33]


def test_a_new_table_is_at_version_zero_and_reloads_keep_the_cursor(tmp_path: Path) -> None:
    t = kraken.SparseTable(TableConfig(dim=2))
    assert t.stats().version == 0 and t.touched_since(0).keys.size == 0
    t.lookup(np.array([1, 2]), train=True, now=0)
    t.save(tmp_path / "t.ktab")
    loaded = kraken.SparseTable.from_file(tmp_path / "t.ktab")
    v = loaded.stats().version
    assert v == t.stats().version and loaded.touched_since(v).keys.size == 0
    loaded.lookup(np.array([3]), train=True, now=1)
    assert loaded.touched_since(v).keys.tolist() == [3]
