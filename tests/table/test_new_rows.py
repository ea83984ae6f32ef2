"""New rows written in one pass (weights, optimizer state, metadata): on a batch large enough
for the parallel kernel, as a run from the arena's tail and scattered over reused rows, and
for an optimizer whose initial state differs between rows."""

from __future__ import annotations

import dataclasses

import numpy as np

import kraken
from kraken.table import LFU, TTL, TableConfig
from kraken.table.init import _column_salts, _fresh_rows


def _by_key(rows: kraken.TableRows, keys: np.ndarray) -> np.ndarray:
    """Positions in ``rows`` (an export) of ``keys``."""
    order = np.argsort(rows.keys)
    return order[np.searchsorted(rows.keys, keys, sorter=order)]


def test_large_batches_get_documented_rows_from_the_tail_and_from_reused_rows() -> None:
    opt = kraken.AdaGrad(initial_accumulator=0.25)
    cfg = TableConfig(dim=16, capacity=50_000, optimizer=opt, initializer=kraken.Normal(0.2),
                      eviction=(TTL(1), LFU(0.999, 0.99)), seed=11)
    t = kraken.SparseTable(cfg)
    rng = np.random.default_rng(5)
    first, second, third = np.split(rng.choice(2**62, 55_000, replace=False), [20_000, 40_000])
    t.lookup(first, train=True, now=1)
    t.lookup(second, train=True, now=5)
    assert t.evict(5).shape[0] == 20_000  # the first batch's rows go back to the free list
    v0 = t.stats().version
    t.lookup(np.concatenate([third, third[:100]]), train=True, now=6)  # reused rows, scattered
    rows = t.export()
    for keys, now in ((second, 5), (third, 6)):
        at = _by_key(rows, keys)
        want = np.empty((keys.shape[0], 16), dtype=np.float32)
        cfg.initializer.fill(keys, cfg.seed, want)
        np.testing.assert_array_equal(rows.weights[at], want)
        assert (rows.state[at] == np.float32(0.25)).all()
        assert (rows.last_seen[at] == now).all()
    at = _by_key(rows, third)
    np.testing.assert_array_equal(rows.count[at], np.where(np.arange(15_000) < 100, 2.0, 1.0))
    assert (rows.stamp[at] > v0).all() and (rows.stamp[_by_key(rows, second)] <= v0).all()


@dataclasses.dataclass(frozen=True)
class _Ramp(kraken.AdaGrad):
    """An initial state that differs between rows (position in the batch)."""

    kind = "ramp_test"

    def init_state(self, state: np.ndarray) -> None:
        state[...] = np.arange(state.size, dtype=np.float32).reshape(state.shape)


def test_an_initial_state_that_differs_between_rows_is_written_as_the_optimizer_gives_it() -> None:
    t = kraken.SparseTable(TableConfig(dim=3, capacity=100, optimizer=_Ramp()))
    keys = np.array([7, 3, 9, 3, 12])
    t.lookup(keys, train=True, now=2)
    rows = t.export()
    at = _by_key(rows, np.array([7, 3, 9, 12]))  # new keys, first-occurrence order
    np.testing.assert_array_equal(rows.state[at], np.arange(12, dtype=np.float32).reshape(4, 3))
    assert (rows.last_seen[at] == 2).all()


def test_parallel_and_serial_builds_write_the_same_rows() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    keys = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    rows = rng.permutation(n + 50)[:n].astype(np.int64)
    salts = _column_salts(np.uint64(9), 2 * 8)
    outs = []
    for build in (_fresh_rows.serial, _fresh_rows.parallel):
        for start in (-1, 17):
            w = np.zeros((n + 50, 8), np.float32)
            s = np.zeros((n + 50, 2), np.float32)
            ls, st, ct = (np.zeros(n + 50, np.int32), np.zeros(n + 50, np.int32),
                          np.ones(n + 50, np.float32))
            build(w, rows, start, keys, salts, 2, 0.1, s, np.array([1.5, 2.5], np.float32),
                  ls, ct, st, 4, 8)
            outs.append((w, s, ls, st, ct))
    for a, b in zip(outs[:2], outs[2:]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert (outs[1][0][17:17 + n] != 0).all(axis=1).any() and (outs[1][3][17:17 + n] == 8).all()
