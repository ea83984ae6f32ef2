"""The replica's dense index against a dict, through growth, erasures and collisions."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kraken.serving.index import MAX_LOAD, DenseIndex

# a small key space so inserts, erasures and lookups of absent keys keep colliding
_keys = st.lists(st.one_of(st.integers(-40, 40), st.sampled_from([-2**63, 2**63 - 1])),
                 max_size=70, unique=True)


class DenseIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = DenseIndex()
        self.ref: dict[int, int] = {}
        self.next_row = 0

    @rule(keys=_keys)
    def insert(self, keys: list[int]) -> None:
        new = [k for k in keys if k not in self.ref]
        rows = np.arange(self.next_row, self.next_row + len(new), dtype=np.int64)
        self.next_row += len(new)
        self.index.insert(np.array(new, dtype=np.int64), rows)
        self.ref.update(zip(new, rows.tolist(), strict=True))

    @rule(keys=_keys)
    def erase(self, keys: list[int]) -> None:
        out = self.index.erase(np.array(keys, dtype=np.int64))
        assert out.tolist() == [self.ref.pop(k, -1) for k in keys]

    @rule(keys=_keys)
    def find(self, keys: list[int]) -> None:
        out = self.index.find(np.array(keys, dtype=np.int64))
        assert out.tolist() == [self.ref.get(k, -1) for k in keys]

    @invariant()
    def same_items(self) -> None:
        keys, rows = self.index.items()
        assert dict(zip(keys.tolist(), rows.tolist(), strict=True)) == self.ref
        assert len(self.index) == len(self.ref) <= self.index.capacity * MAX_LOAD


DenseIndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                               deadline=None)
TestDenseIndex = DenseIndexMachine.TestCase


def test_load_stays_between_grow_to_and_max_load_while_growing() -> None:
    index = DenseIndex()
    keys = np.unique(np.random.default_rng(0).integers(-2**63, 2**63 - 1, 200_000))
    loads = []
    for part in np.array_split(keys, 400):
        index.insert(part, np.arange(len(index), len(index) + part.shape[0]))
        loads.append(len(index) / index.capacity)
    assert min(loads[50:]) >= 0.79 and max(loads) <= MAX_LOAD
    np.testing.assert_array_equal(index.find(keys), np.arange(keys.shape[0]))
    absent = keys[~np.isin(keys + 1, keys)] + 1
    assert np.all(index.find(absent) == -1)
