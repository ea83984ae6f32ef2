"""Admission and eviction policies: sketch bounds, budget under adversarial streams, order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kraken
from kraken.table import LFU, LRU, TTL, Always, CountMin, Probabilistic, TableConfig
from kraken.table.eviction import k_smallest


@given(st.lists(st.integers(-50, 50), max_size=400), st.integers(1, 64), st.integers(1, 4))
def test_count_min_never_undercounts(stream: list[int], width: int, depth: int) -> None:
    pol = CountMin(threshold=10**6, width=width, depth=depth)
    sketch = pol.new_state()
    rng = np.random.default_rng(0)
    for chunk in np.array_split(np.array(stream, dtype=np.int64), 5):
        u, c = np.unique(chunk, return_counts=True)
        pol.decide(u, c, sketch, rng)
    truth = Counter(stream)
    if truth:
        keys = np.array(list(truth), dtype=np.int64)
        est = CountMin.estimate(sketch, keys)
        assert (est >= np.array([truth[k] for k in truth.keys()])).all()


def test_count_min_admits_on_nth_sighting() -> None:
    t = kraken.SparseTable(TableConfig(dim=2, admission=CountMin(threshold=3, width=1 << 12)))
    key = np.array([77], dtype=np.int64)
    for _ in range(2):
        t.lookup(key, train=True, now=0)
        assert not t.contains(key)[0]
    t.lookup(key, train=True, now=0)
    assert t.contains(key)[0]
    # Three sightings inside one batch count too.
    t.lookup(np.array([5, 5, 5]), train=True)
    assert t.contains(np.array([5]))[0]


def test_not_admitted_reads_default_and_drops_gradient() -> None:
    t = kraken.SparseTable(TableConfig(dim=3, admission=Probabilistic(0.0), default_value=0.25))
    rows = t.lookup(np.array([1, 2]), train=True, now=1)
    assert (rows == 0.25).all() and len(t) == 0
    t.apply_gradients(np.array([1, 2]), np.ones((2, 3), np.float32), now=1)
    assert t.stats().dropped_gradients == 2 and len(t) == 0


@pytest.mark.parametrize("eviction", [(), (LRU(0.9, 0.5),), (TTL(1),), (LFU(0.8, 0.4),)])
def test_budget_is_hard_under_adversarial_streams(eviction: tuple) -> None:
    cap, steps, batch = 1000, 40, 3000
    t = kraken.SparseTable(TableConfig(dim=4, capacity=cap, eviction=eviction))
    rng = np.random.default_rng(1)
    for step in range(steps):
        # every batch is all never-seen-before keys, far more than the budget
        keys = rng.integers(-(2**63), 2**63 - 1, size=batch, dtype=np.int64)
        t.lookup(keys, train=True, now=step)
        assert len(t) == cap  # whatever eviction freed is refilled, never more
        # an explicit insert past the budget is refused whole; overwriting live keys is not
        live = t.export().keys[:5]
        with pytest.raises(kraken.CapacityError, match="assign needs 5 new rows, only 0"):
            t.assign(keys[~t.contains(keys)][:5], np.zeros((5, 4), np.float32), now=step)
        t.assign(live, np.ones((5, 4), np.float32), now=step)
        assert len(t) == cap and (t.lookup(live) == 1).all()
        t.evict(now=step)
        s = t.stats()
        assert s.live_rows <= cap and s.high_water <= cap
    s = t.stats()
    # every key was new: each one was either admitted or refused for lack of room
    assert s.admitted + s.rejected_full == steps * batch and s.not_admitted == 0
    assert s.admitted - s.evicted == s.live_rows
    if eviction:
        assert s.evicted > 0 and s.admitted > cap  # freed rows were handed out again
    else:
        assert s.evicted == 0 and s.admitted == cap


def test_capacity_error_on_assign_changes_nothing() -> None:
    t = kraken.SparseTable(TableConfig(dim=2, capacity=3))
    t.assign(np.array([1, 2]), np.ones((2, 2), np.float32))
    before = t.export()
    with pytest.raises(kraken.CapacityError, match="2 new rows, only 1"):
        t.assign(np.array([3, 4, 1]), np.zeros((3, 2), np.float32))
    after = t.export()
    assert sorted(before.keys.tolist()) == sorted(after.keys.tolist())
    assert (t.lookup(np.array([1, 2])) == 1).all()


def test_lru_evicts_oldest_first_then_by_key() -> None:
    t = kraken.SparseTable(TableConfig(dim=1, capacity=10, eviction=LRU(0.5, 0.2)))
    for now, keys in enumerate([[9, 4], [7], [1, 2, 3], [5]]):
        t.lookup(np.array(keys), train=True, now=now)
    # 7 live > 5: evict down to 2, oldest first: 4, 9 (now 0), 7 (now 1), 1, 2 (now 2, by key)
    assert t.evict(now=10).tolist() == [1, 2, 4, 7, 9]
    assert sorted(t.export().keys.tolist()) == [3, 5]


def test_lfu_evicts_least_counted_and_decays() -> None:
    t = kraken.SparseTable(TableConfig(dim=1, capacity=4, eviction=LFU(0.5, 0.5, decay=0.5)))
    t.lookup(np.array([1, 1, 1, 2, 2, 3]), train=True, now=0)
    assert t.evict(now=1).tolist() == [3]
    rows = t.export()
    assert dict(zip(rows.keys.tolist(), rows.count.tolist())) == {1: 1.5, 2: 1.0}


def test_ttl_evicts_only_expired() -> None:
    t = kraken.SparseTable(TableConfig(dim=1, eviction=TTL(ttl=10)))
    t.lookup(np.array([1]), train=True, now=0)
    t.lookup(np.array([2]), train=True, now=5)
    assert t.evict(now=10).tolist() == []
    assert t.evict(now=11).tolist() == [1]
    assert t.evict(now=16).tolist() == [2]


def test_evicted_rows_are_reused_and_memory_stays_flat() -> None:
    t = kraken.SparseTable(TableConfig(dim=8, capacity=500, eviction=TTL(0)))
    for step in range(20):
        t.lookup(np.arange(step * 400, step * 400 + 400), train=True, now=step * 2)
        t.evict(now=step * 2 + 1)
    assert t.stats().high_water <= 400


@given(st.lists(st.integers(0, 5), max_size=50), st.integers(0, 60))
def test_k_smallest_matches_sort(scores: list[int], k: int) -> None:
    keys = np.arange(len(scores), dtype=np.int64)[::-1].copy()
    got = k_smallest(np.array(scores, dtype=np.float64), keys, k)
    want = sorted(range(len(scores)), key=lambda i: (scores[i], keys[i]))[:k]
    assert sorted(got.tolist()) == sorted(want)


def test_policy_configs_are_validated() -> None:
    with pytest.raises(kraken.ConfigError, match="low_watermark"):
        LRU(high_watermark=0.5, low_watermark=0.8)
    with pytest.raises(kraken.ConfigError, match="threshold"):
        CountMin(threshold=0)
    with pytest.raises(kraken.ConfigError, match="p: must be <= 1"):
        Probabilistic(p=1.5)
    with pytest.raises(kraken.ConfigError, match="ttl"):
        TTL(ttl=-1)
    assert Always().to_dict() == {"type": "always"}
