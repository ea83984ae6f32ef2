"""Property-based tests: any sequence of verbs gives the same rows, admissions, evictions,
deltas and stats as the plain-Python reference table."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import kraken
from kraken.table import LFU, LRU, TTL, Always, CountMin, Probabilistic, TableConfig
from tests.table.reference import ReferenceTable

KEY_POOL = [0, 1, -1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 2**63 - 1, -(2**63), 1 << 56,
            (1 << 56) + 1, 123456789012345, -987654321]
keys_st = st.lists(st.sampled_from(KEY_POOL), min_size=0, max_size=12)
now_st = st.integers(min_value=0, max_value=60)

CONFIGS = {
    "sgd-always-ttl-lru": TableConfig(dim=3, capacity=8, optimizer=kraken.SGD(lr=0.1),
                                      admission=Always(), eviction=(TTL(5), LRU(0.75, 0.5))),
    "adagrad-countmin-lfu": TableConfig(dim=2, capacity=10, optimizer=kraken.AdaGrad(lr=0.1),
                                        admission=CountMin(threshold=2, width=8, depth=2),
                                        eviction=LFU(0.9, 0.6, decay=0.5)),
    "adam-probabilistic-lru": TableConfig(dim=4, capacity=6, optimizer=kraken.Adam(lr=0.01),
                                          admission=Probabilistic(0.4),
                                          eviction=LRU(1.0, 0.5), seed=7),
    "rowwise-always-full": TableConfig(dim=2, capacity=5, optimizer=kraken.RowWiseAdaGrad(),
                                       default_value=0.5),
    "ftrl-lfu-nodecay": TableConfig(dim=1, capacity=7, optimizer=kraken.FTRL(l1=0.01),
                                    eviction=LFU(0.7, 0.3, decay=1.0),
                                    initializer=kraken.Zeros()),
    "radagrad-countmin-ttl": TableConfig(dim=2, capacity=12, optimizer=kraken.RAdaGrad(),
                                         admission=CountMin(threshold=3, width=64, depth=3),
                                         eviction=TTL(3), initializer=kraken.Normal(0.1)),
}


def _as_key_array(keys: list[int]) -> np.ndarray:
    return np.array(keys, dtype=np.int64).reshape(-1)


class TableMachine(RuleBasedStateMachine):
    config: TableConfig

    def __init__(self) -> None:
        super().__init__()
        self.table = kraken.SparseTable(self.config)
        self.ref = ReferenceTable(self.config)
        self.synced = self.table.export().version
        self.tmp = Path(tempfile.mkdtemp())

    @rule(keys=keys_st, train=st.booleans(), now=st.none() | now_st)
    def lookup(self, keys: list[int], train: bool, now: int | None) -> None:
        got = self.table.lookup(_as_key_array(keys), train=train, now=now)
        want = self.ref.lookup(keys, train, now)
        np.testing.assert_array_equal(got, want)

    @rule(keys=keys_st, now=now_st, data=st.data())
    def apply_gradients(self, keys: list[int], now: int, data: st.DataObject) -> None:
        vals = data.draw(st.lists(st.floats(-1, 1, width=32), min_size=len(keys) * self.config.dim,
                                  max_size=len(keys) * self.config.dim))
        grads = np.array(vals, dtype=np.float32).reshape(len(keys), self.config.dim)
        self.table.apply_gradients(_as_key_array(keys), grads, now)
        self.ref.apply_gradients(keys, grads, now)

    @rule(keys=st.lists(st.sampled_from(KEY_POOL), unique=True, max_size=6), now=st.none() | now_st)
    def assign(self, keys: list[int], now: int | None) -> None:
        values = np.arange(len(keys) * self.config.dim, dtype=np.float32).reshape(
            len(keys), self.config.dim) / 7
        if self.ref.assign(keys, values, now):
            self.table.assign(_as_key_array(keys), values, now)
        else:
            with pytest.raises(kraken.CapacityError):
                self.table.assign(_as_key_array(keys), values, now)

    @rule(now=now_st)
    def evict(self, now: int) -> None:
        got = self.table.evict(now)
        assert list(got) == self.ref.evict(now)

    @rule()
    def sync(self) -> None:
        delta = self.table.touched_since(self.synced)
        live_changed = {k for k in self.ref.changed if k in self.ref.rows}
        assert set(delta.keys.tolist()) == live_changed
        assert set(delta.evicted.tolist()) == {k for k in self.ref.evicted
                                              if k not in self.ref.rows}
        for k, w in zip(delta.keys.tolist(), delta.weights):
            np.testing.assert_array_equal(w, self.ref.rows[k].w)
        assert delta.version >= self.synced
        # reading changes nothing: the same question gets the same answer, no later changes
        assert self.table.stats().version == delta.version
        again = self.table.touched_since(self.synced)
        assert again.version == delta.version
        assert again.keys.tolist() == delta.keys.tolist()
        assert self.table.touched_since(delta.version).keys.size == 0
        self.synced = delta.version
        self.ref.changed.clear()
        self.ref.evicted.clear()

    @rule()
    def save_and_reload(self) -> None:
        path = self.tmp / "t.ktab"
        self.table.save(path)
        self.table = kraken.SparseTable.from_file(path)
        # Deltas from before a reload are not kept: consumers resync from a full export.
        self.synced = self.table.export().version
        self.ref.changed.clear()
        self.ref.evicted.clear()

    @invariant()
    def same_rows_and_stats(self) -> None:
        rows = self.table.export()
        order = np.argsort(rows.keys)
        keys = rows.keys[order].tolist()
        assert keys == sorted(self.ref.rows)
        for i, k in zip(order, keys):
            ref = self.ref.rows[k]
            np.testing.assert_array_equal(rows.weights[i], ref.w)
            np.testing.assert_array_equal(rows.state[i], ref.s)
            assert rows.last_seen[i] == ref.last_seen
            assert rows.count[i] == ref.count
        s = self.table.stats()
        assert s.live_rows == len(self.ref.rows) <= self.config.capacity
        for name, value in self.ref.counters.items():
            assert getattr(s, name) == value, name
        assert s.clock == self.ref.clock


def _machine(name: str, config: TableConfig) -> type:
    cls = type(f"Machine_{name}", (TableMachine,), {"config": config})
    cls.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
    return cls


for _name, _cfg in CONFIGS.items():
    globals()[f"TestTable_{_name.replace('-', '_')}"] = _machine(_name, _cfg).TestCase
