"""The table file format across versions: files written before a table kept one version
per row and an access count only for LFU (every file then held ``count`` and a ``stamp``
of the weights' last change) load into today's table, and today's files round-trip.

Old files are written here with the container alone (``write_arrays``), as the old
writer laid them out, so the test does not depend on today's writer.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken
from kraken.arrayfile import read_header, write_arrays
from kraken.table import LFU, LRU, TableConfig, TableRows
from kraken.table.rows import COUNTERS

CONFIGS = [
    TableConfig(dim=3, capacity=64, optimizer=kraken.RowWiseAdaGrad()),
    TableConfig(dim=2, capacity=64, optimizer=kraken.Adam(), eviction=LFU(0.9, 0.5)),
    TableConfig(dim=4, capacity=64, optimizer=kraken.SGD(), precision=kraken.Precision.FP16,
                eviction=LRU(0.9, 0.5)),
]
_STORED = {kraken.Precision.FP32: np.float32, kraken.Precision.FP16: np.float16}


def _rows(draw: st.DrawFn, cfg: TableConfig, keys: list[int], version: int) -> TableRows:
    n = len(keys)
    floats = st.floats(-4, 4, width=16)
    w = np.array(draw(st.lists(floats, min_size=n * cfg.dim, max_size=n * cfg.dim)),
                 dtype=_STORED[cfg.precision]).reshape(n, cfg.dim)
    s = np.array(draw(st.lists(floats, min_size=n * cfg.state_width,
                               max_size=n * cfg.state_width)),
                 dtype=np.float32).reshape(n, cfg.state_width)
    ints = st.integers(0, version)
    return TableRows(
        keys=np.array(keys, dtype=np.int64), weights=w, state=s,
        last_seen=np.array(draw(st.lists(ints, min_size=n, max_size=n)), np.int32),
        count=np.array(draw(st.lists(st.floats(0, 50, width=32), min_size=n, max_size=n)),
                       np.float32),
        stamp=np.array(draw(st.lists(ints, min_size=n, max_size=n)), np.int32))


@st.composite
def _old_files(draw: st.DrawFn) -> tuple[TableConfig, TableRows, TableRows, list[int], int]:
    """A config, the rows of an old full file (at version 10), the rows of an old
    incremental file after it (version 20), the keys that file evicts, its version."""
    cfg = draw(st.sampled_from(CONFIGS))
    pool = st.integers(-(2**63), 2**63 - 1)
    base = draw(st.lists(pool, unique=True, max_size=12))
    evicted = [k for k in base if draw(st.booleans())]
    changed = draw(st.lists(pool, unique=True, max_size=8))
    changed = [k for k in changed if k not in evicted] + \
        [k for k in evicted if draw(st.booleans())]  # evicted, then admitted again
    return cfg, _rows(draw, cfg, base, 10), _rows(draw, cfg, changed, 20), evicted, 20


def _write_old(path: Path, cfg: TableConfig, rows: TableRows, version: int,
               since: int | None = None, evicted: list[int] | None = None) -> None:
    meta = {"kind": "kraken.sparse_table", "config": cfg.to_dict(), "clock": version,
            "version": version, "rng": np.random.default_rng(3).bit_generator.state,
            "counters": dict.fromkeys(COUNTERS, 1)}
    arrays = {name: getattr(rows, name) for name in
              ("keys", "weights", "state", "last_seen", "count", "stamp")}
    if since is not None:
        meta["kind"], meta["since"] = "kraken.sparse_table_delta", since
        arrays["evicted"] = np.array(evicted or [], dtype=np.int64)
    write_arrays(path, meta, arrays)


def _by_key(rows: TableRows) -> dict[int, tuple]:
    return {int(k): (rows.weights[i].tolist(), rows.state[i].tolist(), int(rows.last_seen[i]),
                     float(rows.count[i]), int(rows.stamp[i]))
            for i, k in enumerate(rows.keys)}


@settings(max_examples=25, deadline=None)
@given(_old_files())
def test_old_files_load_and_today_s_files_round_trip(
        case: tuple[TableConfig, TableRows, TableRows, list[int], int]) -> None:
    cfg, full, delta, evicted, version = case
    counts = any(p.reads_count for p in cfg.eviction)
    # What the chain describes, row by row (the delta's rows win; evicted keys go).
    want = {k: v for k, v in _by_key(full).items() if k not in evicted}
    want.update(_by_key(delta))
    if not counts:  # a table without LFU keeps no count: it reads as zero
        want = {k: (w, s, ls, 0.0, stamp) for k, (w, s, ls, _, stamp) in want.items()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _write_old(tmp / "full.ktab", cfg, full, 10)
        _write_old(tmp / "delta.ktab", cfg, delta, version, since=10, evicted=evicted)
        t = kraken.SparseTable(cfg)
        t.load_chain([[tmp / "full.ktab"], [tmp / "delta.ktab"]])
        assert _by_key(t.export()) == want
        assert t.stats().version == version and t.touched_since(version).keys.size == 0
        assert _by_key(kraken.SparseTable.from_file(tmp / "full.ktab").export()) == {
            k: (w, s, ls, c if counts else 0.0, stamp)
            for k, (w, s, ls, c, stamp) in _by_key(full).items()}
        # Today's writer: the same rows back, and `count` only where the table keeps it.
        t.save(tmp / "new.ktab")
        names = {e["name"] for e in read_header(tmp / "new.ktab").arrays}
        assert ("count" in names) == counts
        u = kraken.SparseTable.from_file(tmp / "new.ktab")
        assert _by_key(u.export()) == want
        # the same table but for where rows sit in the arena (the chain left holes)
        same = dataclasses.replace(u.stats(), high_water=0, memory_bytes=0)
        assert same == dataclasses.replace(t.stats(), high_water=0, memory_bytes=0)
        # and an incremental save on top of it replays to the same table
        v = u.stats().version
        some = np.array(sorted(want)[:3], dtype=np.int64)
        u.lookup(some, train=True, now=version + 1)
        u.save(tmp / "inc.ktab", since=v)
        r = kraken.SparseTable(cfg)
        r.load_chain([[tmp / "new.ktab"], [tmp / "inc.ktab"]])
        assert _by_key(r.export()) == _by_key(u.export())
