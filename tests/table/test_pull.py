"""The training pull (``lookup(train=True)``) against a plain reference: a dict of rows, the
library's initializer called per admitted key, and the admission rules written out. Both
ways the pull finds new keys (claiming index slots, or beside the index while most new keys
are turned away) are checked.

Batches are large enough to grow the hash index in the middle of a batch (and, when most new
keys are turned away, to shrink it back), to run the parallel kernels, and to hit the
capacity; evictions in between hand out reused (non-consecutive) rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken
from kraken.config import Precision
from kraken.table import LFU, TTL, Always, CountMin, Probabilistic, TableConfig
from kraken.table.codec import decode, encode
from kraken.table.index import MAX_LOAD, HashIndex
from tests.table.reference import ReferenceTable

POLICIES = {"always": Always(), "count_min": CountMin(threshold=2, width=64, depth=2),
            "count_min_3": CountMin(threshold=3, width=1 << 12, depth=3),
            "probabilistic": Probabilistic(0.3)}


class PullReference(ReferenceTable):
    """``ReferenceTable`` whose new rows hold their weights as the table stores them (16-bit
    storage rounds the initial weights to nearest)."""

    def _new_row(self, key: int, now: int):
        row = super()._new_row(key, now)
        row.w = decode(encode(row.w, self.c.precision), self.c.precision)
        return row

    def pull(self, keys: list[int], now: int) -> np.ndarray:
        return self.lookup(keys, True, now)


def _index_capacity(live: int, cap: int) -> int:
    """The slots an index of ``cap`` slots has after inserting up to ``live`` keys."""
    while live > cap * MAX_LOAD:
        cap *= 2
    return cap


def _check_same(table: kraken.SparseTable, ref: PullReference, cap: int) -> int:
    rows = table.export()
    assert sorted(rows.keys.tolist()) == sorted(ref.rows)
    want = [ref.rows[k] for k in rows.keys.tolist()]
    if want:
        np.testing.assert_array_equal(decode(rows.weights, table.config.precision),
                                      np.stack([r.w for r in want]))
        np.testing.assert_array_equal(rows.state, np.stack([r.s for r in want]))
        np.testing.assert_array_equal(rows.last_seen, [r.last_seen for r in want])
        np.testing.assert_array_equal(rows.count, np.array([r.count for r in want], np.float32))
    st_ = table.stats()
    for name, want in ref.counters.items():
        assert getattr(st_, name) == want, name
    cap = _index_capacity(len(ref.rows), cap)  # the index grows as insert would, never more
    assert st_.index_slots == cap
    return cap


batches_st = st.lists(  # size, pool, evict after, dedupe beside the index (else by claims)
    st.tuples(st.integers(1, 2500), st.integers(0, 3000), st.booleans(), st.booleans()),
    min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(policy=st.sampled_from(sorted(POLICIES)), capacity=st.integers(1, 3000),
       precision=st.sampled_from(list(Precision)), batches=batches_st,
       seed=st.integers(0, 2**32 - 1), lfu=st.booleans())
def test_pull_matches_reference(policy: str, capacity: int, precision: Precision,
                                batches: list[tuple[int, int, bool, bool]], seed: int,
                                lfu: bool) -> None:
    eviction = (TTL(1), LFU(0.9, 0.5, decay=0.5)) if lfu else (TTL(1),)  # LFU: counts kept
    config = TableConfig(dim=3, capacity=capacity, optimizer=kraken.AdaGrad(),
                         precision=precision, admission=POLICIES[policy], eviction=eviction,
                         default_value=-0.5, seed=seed % 1000)
    table, ref = kraken.SparseTable(config), PullReference(config)
    rng = np.random.default_rng(seed)
    cap = table.stats().index_slots
    for step, (size, pool, evict, beside) in enumerate(batches):
        now = 3 * step
        # keys from a pool of pool + 2 (many duplicates when small), two of them extreme
        pool_keys = rng.integers(-(2**63), 2**63 - 1, size=pool + 2, dtype=np.int64)
        pool_keys[:2] = [-(2**63), -1]
        keys = pool_keys[rng.integers(0, pool + 2, size=size)]
        if step and rng.random() < 0.5:  # keys of earlier batches come back
            old = np.array(list(ref.rows) or [0], dtype=np.int64)
            keys[: size // 2] = old[rng.integers(0, old.shape[0], size=size // 2)]
        table._turned_away = 1.0 if beside else 0.0  # the path _pull takes (same results)
        # half the pulls follow a handed-out version (the pull opens a new one), half not
        since = table.stats().version if rng.random() < 0.5 else None
        got = table.lookup(keys, train=True, now=now)
        want = ref.pull(keys.tolist(), now)
        np.testing.assert_array_equal(got, want)
        if since is not None:  # the rows changed are those of the batch's keys, no more
            assert set(table.touched_since(since).keys.tolist()) == \
                {k for k in keys.tolist() if k in ref.rows}
        cap = _check_same(table, ref, cap)
        if evict:  # frees rows: the next admissions reuse them out of order
            assert table.evict(now + 2).tolist() == ref.evict(now + 2)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_large_batch_matches_reference(policy: str) -> None:
    """Batches past the parallel kernels' threshold, half of them repeated keys."""
    config = TableConfig(dim=16, capacity=9_000, optimizer=kraken.RowWiseAdaGrad(),
                         admission=POLICIES[policy], seed=3)
    table, ref = kraken.SparseTable(config), PullReference(config)
    rng = np.random.default_rng(5)
    pool = rng.integers(-(2**63), 2**63 - 1, size=12_000, dtype=np.int64)
    cap = table.stats().index_slots
    for step in range(2):
        keys = pool[rng.integers(0, pool.shape[0], size=17_000)]  # 17k x 16 >= 2**18
        np.testing.assert_array_equal(table.lookup(keys, train=True, now=step),
                                      ref.pull(keys.tolist(), step))
        cap = _check_same(table, ref, cap)


int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=40, deadline=None)
@given(program=st.lists(st.tuples(st.lists(int64s | st.integers(0, 50), max_size=1500),
                                  st.integers(0, 2**32 - 1)), max_size=5))
def test_claim_settle_is_insert_or_find(program: list[tuple[list[int], int]]) -> None:
    """The bare index: claim + settle (keeping a random subset of the new keys) against a
    dict; sizes past a thousand keys grow the index while claiming."""
    idx, ref = HashIndex(), {}
    next_row, cap = 0, idx.capacity
    for keys, salt in program:
        arr = np.array(keys, dtype=np.int64)
        rows, pending = idx.claim(arr)
        new = list(dict.fromkeys(k for k in keys if k not in ref))
        assert pending.keys.tolist() == new
        assert pending.counts.tolist() == [keys.count(k) for k in new]
        assert [r if r >= 0 else -1 for r in rows.tolist()] == [ref.get(k, -1) for k in keys]
        assert [-2 - r for r in rows.tolist() if r < -1] == [new.index(k) for k in keys
                                                             if k not in ref]
        keep = np.random.default_rng(salt).random(len(new)) < 0.6
        given_rows = np.where(keep, np.arange(next_row, next_row + len(new)), -1)
        next_row += len(new)
        idx.settle(pending, given_rows.astype(np.int64))
        ref.update((k, int(r)) for k, r in zip(new, given_rows) if r >= 0)
        assert idx.find(arr).tolist() == [ref.get(k, -1) for k in keys]
        assert len(idx) == len(ref)
        cap = _index_capacity(len(ref), cap)
        assert idx.capacity == cap
    k, r = idx.items()
    assert dict(zip(k.tolist(), r.tolist())) == ref
