"""The admission contract (``kraken/table/admission.py``), run over every admission policy.

Policies are discovered from ``kraken.table.__all__``: a new policy is checked as soon as
it is exported, and the tables below (valid settings, invalid values, what the policy
promises) must be extended for it or the contract fails by name.

Every policy: ``decide`` answers ``bool[U]`` for ``U`` distinct keys and changes nothing
but its own state and the generator; it is deterministic given the table's seed; its
config round-trips through ``to_dict`` / JSON and rejects bad values with ``ConfigError``;
its state (sketch, generator) survives a table's save and load. Each also keeps its own
promise (``PROMISES``): which keys it must and must not admit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken.table
from kraken.errors import ConfigError, InputError
from kraken.table import AdmissionPolicy, Always, CountMin, Probabilistic, SparseTable, TableConfig
from kraken.table.admission import admission_from_dict

POLICIES = sorted(
    (obj for name in kraken.table.__all__
     if isinstance(obj := getattr(kraken.table, name), type)
     and issubclass(obj, AdmissionPolicy) and obj is not AdmissionPolicy),
    key=lambda c: c.__name__)

# Valid settings per policy (used for determinism, round trips and save/load).
VALID: dict[str, list[dict]] = {
    "Always": [{}],
    "CountMin": [{"threshold": 1, "width": 1, "depth": 1},
                 {"threshold": 3, "width": 64, "depth": 4}, {"threshold": 2, "width": 1 << 12}],
    "Probabilistic": [{"p": 0.0}, {"p": 0.3}, {"p": 1.0}],
}

# Invalid values per field beyond the ones every field rejects (NaN, inf, -1, bools, strings).
EXTRA_INVALID: dict[str, dict[str, list]] = {
    "Always": {},
    "CountMin": {"threshold": [0, 1.5], "width": [0, 2.0], "depth": [0, 9]},
    "Probabilistic": {"p": [1.0001, 2]},
}


def _always(policy: Always, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return counts > 0, np.zeros(counts.shape, dtype=bool)


def _count_min(policy: CountMin, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Never under-counts: a key seen `threshold` times is admitted by then, whatever the
    # width. A sketch this wide (few keys, 1 << 20 cells a row) does not over-count, so a
    # key seen fewer times is not admitted.
    return counts >= policy.threshold, counts < policy.threshold


def _probabilistic(policy: Probabilistic, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ((counts > 0) & (policy.p == 1.0), (counts == 0) | (policy.p == 0.0))


# What each policy promises after a stream in which key i occurred counts[i] times:
# (must be admitted, must not be admitted), for the settings in PROMISE_SETTINGS.
PROMISES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "Always": _always, "CountMin": _count_min, "Probabilistic": _probabilistic}
PROMISE_SETTINGS: dict[str, list[dict]] = {
    "Always": [{}],
    "CountMin": [{"threshold": 1, "width": 1 << 20}, {"threshold": 3, "width": 1 << 20},
                 {"threshold": 5, "width": 1 << 20, "depth": 2}],
    "Probabilistic": [{"p": 0.0}, {"p": 1.0}],
}

by_name = pytest.mark.parametrize("cls", POLICIES, ids=lambda c: c.__name__)


def _instances(cls: type) -> list[AdmissionPolicy]:
    return [cls(**kw) for kw in VALID[cls.__name__]]


def test_every_exported_policy_is_covered() -> None:
    names = {c.__name__ for c in POLICIES}
    assert names >= {"Always", "CountMin", "Probabilistic"}
    for table in (VALID, EXTRA_INVALID, PROMISES, PROMISE_SETTINGS):
        assert set(table) == names, "extend the tables"
    kinds = [c.kind for c in POLICIES]
    assert len(set(kinds)) == len(kinds), f"duplicate kinds {kinds}"


@by_name
def test_config_round_trips_through_json(cls: type) -> None:
    for policy in _instances(cls):
        d = json.loads(json.dumps(policy.to_dict()))
        assert d["type"] == cls.kind
        assert admission_from_dict(d) == policy


@by_name
def test_bad_config_is_a_config_error(cls: type) -> None:
    fields = [f.name for f in dataclasses.fields(cls)]
    for field in fields:
        for bad in [math.nan, math.inf, -1, True, "x", None, *EXTRA_INVALID[cls.__name__][field]]:
            with pytest.raises(ConfigError, match=field):
                cls(**{field: bad})
    with pytest.raises(ConfigError, match="unknown key"):
        admission_from_dict({"type": cls.kind, "no_such_field": 1})


stream_st = st.lists(st.lists(st.integers(-20, 20), max_size=30), min_size=1, max_size=6)


def _feed(policy: AdmissionPolicy, stream: list[list[int]], seed: int) -> list[np.ndarray]:
    """Decisions for each batch of absent keys, as the table calls ``decide``."""
    state, rng = policy.new_state(), np.random.default_rng(seed)
    out = []
    for batch in stream:
        keys, counts = np.unique(np.array(batch, dtype=np.int64), return_counts=True)
        admit = policy.decide(keys, counts, state, rng)
        assert admit.dtype == np.bool_ and admit.shape == keys.shape
        out.append(admit)
    return out


@by_name
@settings(max_examples=30, deadline=None)
@given(stream=stream_st, seed=st.integers(0, 2**32 - 1))
def test_decisions_are_deterministic_given_the_seed(cls: type, stream: list[list[int]],
                                                    seed: int) -> None:
    for policy in _instances(cls):
        a, b = _feed(policy, stream, seed), _feed(policy, stream, seed)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


@by_name
@settings(max_examples=40, deadline=None)
@given(stream=stream_st)
def test_policy_keeps_its_promise_in_a_table(cls: type, stream: list[list[int]]) -> None:
    pool = list(range(-20, 21))
    for kw in PROMISE_SETTINGS[cls.__name__]:
        policy = cls(**kw)
        t = SparseTable(TableConfig(dim=2, capacity=100, admission=policy, seed=5))
        for now, batch in enumerate(stream):
            t.lookup(np.array(batch, dtype=np.int64), train=True, now=now)
        seen = Counter(k for batch in stream for k in batch)
        counts = np.array([seen[k] for k in pool])
        must, must_not = PROMISES[cls.__name__](policy, counts)
        live = t.contains(np.array(pool, dtype=np.int64))
        assert live[must].all(), f"{policy}: keys {np.array(pool)[must & ~live]} not admitted"
        assert not live[must_not].any(), f"{policy}: keys {np.array(pool)[must_not & live]}"
        s = t.stats()
        assert s.admitted == int(live.sum()) and s.rejected_full == 0


@by_name
@settings(max_examples=15, deadline=None)
@given(before=stream_st, after=stream_st)
def test_state_round_trips_through_save_and_load(cls: type, before: list[list[int]],
                                                 after: list[list[int]],
                                                 tmp_path_factory: pytest.TempPathFactory
                                                 ) -> None:
    path: Path = tmp_path_factory.mktemp("adm") / "t.ktab"
    for policy in _instances(cls):
        t = SparseTable(TableConfig(dim=2, capacity=1000, admission=policy, seed=9))
        for now, batch in enumerate(before):
            t.lookup(np.array(batch, dtype=np.int64), train=True, now=now)
        t.save(path)
        loaded = SparseTable.from_file(path)
        for now, batch in enumerate(after, start=len(before)):
            keys = np.array(batch, dtype=np.int64)
            np.testing.assert_array_equal(t.lookup(keys, train=True, now=now),
                                          loaded.lookup(keys, train=True, now=now))
        pool = np.arange(-20, 21)
        np.testing.assert_array_equal(t.contains(pool), loaded.contains(pool))
        assert t.stats() == loaded.stats()


@by_name
def test_decide_on_no_keys_admits_none(cls: type) -> None:
    for policy in _instances(cls):
        got = policy.decide(np.empty(0, np.int64), np.empty(0, np.int64), policy.new_state(),
                            np.random.default_rng(0))
        assert got.dtype == np.bool_ and got.shape == (0,)


def test_count_min_without_its_sketch_is_an_input_error() -> None:
    with pytest.raises(InputError, match="new_state"):
        CountMin().decide(np.array([1]), np.array([1]), None, np.random.default_rng(0))


def test_probabilistic_admits_at_its_rate() -> None:
    # 1 - (1 - p) ** count per batch; seeded, so this is exact for the seed, not flaky
    keys = np.arange(20_000, dtype=np.int64)
    for p, count in ((0.1, 1), (0.1, 3), (0.5, 2)):
        got = Probabilistic(p).decide(keys, np.full(keys.shape, count), None,
                                      np.random.default_rng(0)).mean()
        want = 1 - (1 - p) ** count
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / keys.shape[0])
