"""The eviction contract (``kraken/table/eviction.py``), run over every eviction policy.

Policies are discovered from ``kraken.table.__all__``: a new policy is checked as soon as
it is exported, and the tables below (valid settings, invalid values, the victims a
policy must choose) must be extended for it or the contract fails by name.

Every policy: ``select`` returns distinct int64 indices of live rows, exactly the victims
its documented rule names (``ORACLES``: written here one row at a time, from the
docstrings), so never more than asked (watermark policies stop at the low watermark)
and ties go by key; the victims depend on the rows, not on their order; ``after_pass``
only lowers counts; configs round-trip and reject bad values with ``ConfigError``. In a
table: only live keys are evicted, a second pass at the same ``now`` evicts nothing, and
a saved and reloaded table evicts the same keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken.table
from kraken.errors import ConfigError
from kraken.table import LFU, LRU, TTL, EvictionPolicy, SparseTable, TableConfig
from kraken.table.eviction import eviction_from_dict

POLICIES = sorted(
    (obj for name in kraken.table.__all__
     if isinstance(obj := getattr(kraken.table, name), type)
     and issubclass(obj, EvictionPolicy) and obj is not EvictionPolicy),
    key=lambda c: c.__name__)

VALID: dict[str, list[dict]] = {
    "TTL": [{"ttl": 0}, {"ttl": 3}, {"ttl": 2**31 - 1}],
    "LRU": [{"high_watermark": 1.0, "low_watermark": 0.0},
            {"high_watermark": 0.5, "low_watermark": 0.5}, {"high_watermark": 0.8,
                                                            "low_watermark": 0.3}],
    "LFU": [{"high_watermark": 0.9, "low_watermark": 0.6, "decay": 0.5},
            {"high_watermark": 0.4, "low_watermark": 0.0, "decay": 1.0},
            {"high_watermark": 0.7, "low_watermark": 0.7, "decay": 0.0}],
}

EXTRA_INVALID: dict[str, dict[str, list]] = {
    "TTL": {"ttl": [1.5]},
    "LRU": {"high_watermark": [1.0001], "low_watermark": [1.0001]},
    "LFU": {"high_watermark": [1.0001], "low_watermark": [1.0001], "decay": [1.5]},
}


def _watermark_victims(score: Callable[[int], float]) -> Callable[..., list[int]]:
    def oracle(p: EvictionPolicy, rows: dict[int, tuple[int, float]], now: int,
               cap: int) -> list[int]:
        n = len(rows)
        if n <= math.floor(p.high_watermark * cap):
            return []
        order = sorted(rows, key=lambda k: (score(rows[k]), k))
        return order[: n - math.floor(p.low_watermark * cap)]
    return oracle


def _ttl_victims(p: TTL, rows: dict[int, tuple[int, float]], now: int, cap: int) -> list[int]:
    return [k for k, (last_seen, _) in rows.items() if now - last_seen > p.ttl]


# key -> (last_seen, count) of every live row, now, capacity -> the keys to evict
ORACLES: dict[str, Callable[..., list[int]]] = {
    "TTL": _ttl_victims,
    "LRU": _watermark_victims(lambda r: r[0]),
    "LFU": _watermark_victims(lambda r: r[1]),
}

by_name = pytest.mark.parametrize("cls", POLICIES, ids=lambda c: c.__name__)


def _instances(cls: type) -> list[EvictionPolicy]:
    return [cls(**kw) for kw in VALID[cls.__name__]]


def test_every_exported_policy_is_covered() -> None:
    names = {c.__name__ for c in POLICIES}
    assert names >= {"TTL", "LRU", "LFU"}
    for table in (VALID, EXTRA_INVALID, ORACLES):
        assert set(table) == names, "extend the tables"
    kinds = [c.kind for c in POLICIES]
    assert len(set(kinds)) == len(kinds), f"duplicate kinds {kinds}"


@by_name
def test_config_round_trips_through_json(cls: type) -> None:
    for policy in _instances(cls):
        d = json.loads(json.dumps(policy.to_dict()))
        assert d["type"] == cls.kind
        assert eviction_from_dict(d) == policy


@by_name
def test_bad_config_is_a_config_error(cls: type) -> None:
    for field in (f.name for f in dataclasses.fields(cls)):
        for bad in [math.nan, math.inf, -1, True, "x", None, *EXTRA_INVALID[cls.__name__][field]]:
            with pytest.raises(ConfigError, match=field):
                cls(**{field: bad})
    with pytest.raises(ConfigError, match="unknown key"):
        eviction_from_dict({"type": cls.kind, "no_such_field": 1})


# Live rows: distinct keys (a few values each so that ties happen), last_seen <= now.
rows_st = st.dictionaries(st.integers(-(2**63), 2**63 - 1),
                          st.tuples(st.integers(0, 6), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
                          max_size=25)


@by_name
@settings(max_examples=60, deadline=None)
@given(rows=rows_st, extra_now=st.integers(0, 8), cap=st.integers(1, 30), data=st.data())
def test_select_chooses_exactly_the_documented_victims(cls: type, rows: dict, extra_now: int,
                                                       cap: int, data: st.DataObject) -> None:
    cap = max(cap, len(rows))  # live rows never exceed capacity
    now = 6 + extra_now
    for policy in _instances(cls):
        keys = np.array(list(rows), dtype=np.int64)
        last_seen = np.array([r[0] for r in rows.values()], dtype=np.int32)
        count = np.array([r[1] for r in rows.values()], dtype=np.float32)
        got = policy.select(keys, last_seen, count, now, cap)
        assert got.dtype == np.int64 and np.unique(got).shape == got.shape
        assert ((got >= 0) & (got < keys.shape[0])).all()
        want = ORACLES[cls.__name__](policy, rows, now, cap)
        assert sorted(keys[got].tolist()) == sorted(want)
        # the victims are a function of the rows, not of their order
        perm = np.array(data.draw(st.permutations(range(keys.shape[0]))), dtype=np.int64)
        again = policy.select(keys[perm], last_seen[perm], count[perm], now, cap)
        assert sorted(keys[perm][again].tolist()) == sorted(want)


@by_name
@settings(max_examples=60, deadline=None)
@given(rows=rows_st, extra_now=st.integers(0, 8), cap=st.integers(1, 30))
def test_an_idle_pass_selects_nothing_and_keeps_counts(cls: type, rows: dict, extra_now: int,
                                                        cap: int) -> None:
    """``idle(live, capacity)`` may only say True where ``select`` then chooses no victim
    and ``after_pass`` changes no count (a table skips such a pass)."""
    cap = max(cap, len(rows))
    keys = np.array(list(rows), dtype=np.int64)
    last_seen = np.array([r[0] for r in rows.values()], dtype=np.int32)
    count = np.array([r[1] for r in rows.values()], dtype=np.float32)
    for policy in _instances(cls):
        if not policy.idle(len(rows), cap):
            continue
        assert policy.select(keys, last_seen, count, 6 + extra_now, cap).shape == (0,)
        c = count.copy()
        policy.after_pass(c)
        assert np.array_equal(c, count)


def test_watermark_policies_are_idle_exactly_below_their_high_watermark() -> None:
    lru = LRU(high_watermark=0.5, low_watermark=0.25)
    assert lru.idle(5, 10) and not lru.idle(6, 10)
    assert not LFU(high_watermark=0.5, low_watermark=0.25).idle(0, 10)  # decays every pass
    assert not TTL(ttl=3).idle(0, 10)


@by_name
@settings(max_examples=30, deadline=None)
@given(count=st.lists(st.floats(0, 1e6, width=32), max_size=20))
def test_after_pass_never_raises_a_count(cls: type, count: list[float]) -> None:
    for policy in _instances(cls):
        c = np.array(count, dtype=np.float32)
        before = c.copy()
        policy.after_pass(c)
        assert c.dtype == np.float32 and c.shape == before.shape
        assert (c <= before).all() and (c >= 0).all()


def _table(policy: EvictionPolicy, cap: int = 20) -> SparseTable:
    return SparseTable(TableConfig(dim=2, capacity=cap, eviction=(policy,)))


batches_st = st.lists(st.tuples(st.lists(st.integers(0, 40), max_size=15), st.integers(0, 3)),
                      min_size=1, max_size=8)


@by_name
@settings(max_examples=25, deadline=None)
@given(batches=batches_st)
def test_in_a_table_only_live_rows_go_and_a_second_pass_is_empty(cls: type,
                                                                  batches: list) -> None:
    pool = np.arange(0, 41, dtype=np.int64)
    for policy in _instances(cls):
        t = _table(policy)
        now = 0
        for keys, step in batches:
            now += step
            t.lookup(np.array(keys, dtype=np.int64), train=True, now=now)
            live = set(pool[t.contains(pool)].tolist())
            victims = t.evict(now)
            assert set(victims.tolist()) <= live
            assert victims.tolist() == sorted(set(victims.tolist()))
            assert not t.contains(victims).any()
            assert len(t) == len(live) - victims.shape[0]
            assert t.evict(now).size == 0


@by_name
@settings(max_examples=15, deadline=None)
@given(batches=batches_st)
def test_a_reloaded_table_evicts_the_same_keys(cls: type, batches: list,
                                               tmp_path_factory: pytest.TempPathFactory
                                               ) -> None:
    path: Path = tmp_path_factory.mktemp("ev") / "t.ktab"
    for policy in _instances(cls):
        t = _table(policy)
        now = 0
        for keys, step in batches[:-1]:
            now += step
            t.lookup(np.array(keys, dtype=np.int64), train=True, now=now)
        t.save(path)
        loaded = SparseTable.from_file(path)
        keys, step = batches[-1]
        for table in (t, loaded):
            table.lookup(np.array(keys, dtype=np.int64), train=True, now=now + step)
        for later in (now + step, now + step + 4):
            np.testing.assert_array_equal(t.evict(later), loaded.evict(later))


def test_lfu_decays_surviving_counts_and_lru_ttl_keep_them() -> None:
    c = np.array([4.0, 2.0], dtype=np.float32)
    LFU(decay=0.25).after_pass(c)
    assert c.tolist() == [1.0, 0.5]
    for policy in (LRU(), TTL()):
        c = np.array([4.0, 2.0], dtype=np.float32)
        policy.after_pass(c)
        assert c.tolist() == [4.0, 2.0]
