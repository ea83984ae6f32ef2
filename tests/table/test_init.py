"""Initial rows are the documented pure function of ``(key, seed)``, written in plain Python
here; ``fill_rows`` (straight into scattered rows) gives exactly what ``fill`` gives."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken
from kraken.table.init import Initializer, NewRowColumns
from tests.table.reference import fmix64

_M64 = (1 << 64) - 1
keys_st = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20)
seeds_st = st.integers(0, 2**64 - 1)


def _u01(key: int, seed: int, j: int) -> float:
    """``fmix64(key ^ fmix64(seed * golden + j + 1)) >> 11`` over 2**53: uniform in [0, 1)."""
    salt = fmix64((seed * 0x9E3779B97F4A7C15 + j + 1) & _M64)
    return (fmix64((key & _M64) ^ salt) >> 11) / 2.0**53


@settings(max_examples=30, deadline=None)
@given(keys=keys_st, seed=seeds_st, dim=st.integers(1, 9))
def test_uniform_and_zeros_are_the_documented_function(keys: list[int], seed: int,
                                                       dim: int) -> None:
    arr = np.array(keys, dtype=np.int64)
    got = np.empty((len(keys), dim), dtype=np.float32)
    kraken.Uniform(0.25).fill(arr, seed, got)
    want = [[np.float32((2.0 * _u01(k, seed, j) - 1.0) * 0.25) for j in range(dim)]
            for k in keys]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.float32))
    kraken.Zeros().fill(arr, seed, got)
    assert not got.any()


@settings(max_examples=30, deadline=None)
@given(keys=keys_st, seed=seeds_st, dim=st.integers(1, 9))
def test_normal_is_the_documented_box_muller(keys: list[int], seed: int, dim: int) -> None:
    got = np.empty((len(keys), dim), dtype=np.float32)
    kraken.Normal(0.1).fill(np.array(keys, dtype=np.int64), seed, got)
    want = [[math.sqrt(-2.0 * math.log(1.0 - _u01(k, seed, 2 * j)))
             * math.cos(2.0 * math.pi * _u01(k, seed, 2 * j + 1)) * 0.1 for j in range(dim)]
            for k in keys]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-6, atol=1e-12)


class _Doubled(Initializer):
    """Overrides only ``fill``: ``fill_rows`` must go through it."""

    kind = "doubled_test"
    _mode = 1

    def fill(self, keys: np.ndarray, seed: int, out: np.ndarray) -> None:
        kraken.Uniform(0.05).fill(keys, seed, out)
        out *= 2


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), seed=seeds_st, data=st.data())
def test_fill_rows_equals_fill_scattered(n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(n)
    keys = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    rows = rng.permutation(n + 7)[:n]
    for init in (kraken.Uniform(0.05), kraken.Normal(0.3), kraken.Zeros(), _Doubled()):
        want = np.empty((n, 6), dtype=np.float32)
        init.fill(keys, seed, want)
        out = np.full((n + 7, 6), 9.0, dtype=np.float32)
        init.fill_rows(keys, seed, out, rows)
        np.testing.assert_array_equal(out[rows], want)
        untouched = np.setdiff1d(np.arange(n + 7), rows)
        assert (out[untouched] == 9.0).all()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 200), seed=seeds_st, span=st.booleans(), counting=st.booleans(),
       width=st.integers(0, 3), now=st.integers(0, 2**31 - 1), version=st.integers(0, 2**31 - 1))
def test_fill_new_writes_fill_rows_and_the_other_columns(n: int, seed: int, span: bool,
                                                        counting: bool, width: int, now: int,
                                                        version: int) -> None:
    """One pass (``fill_new``) = ``fill_rows`` + state row + metadata, rows given as a run
    (``start``) or scattered, on exactly those rows; a zero-stride count is left alone."""
    rng = np.random.default_rng(n)
    keys = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    total = n + 9
    rows = np.arange(4, 4 + n, dtype=np.int64) if span else rng.permutation(total)[:n]
    start = 4 if span else -1
    state0 = rng.random(width, dtype=np.float32)
    for init in (kraken.Uniform(0.05), kraken.Normal(0.3), kraken.Zeros(), _Doubled()):
        weights = np.full((total, 5), 9.0, dtype=np.float32)
        state = np.full((total, width), 7.0, dtype=np.float32)
        last_seen = np.full(total, -3, dtype=np.int32)
        stamp = np.full(total, -4, dtype=np.int32)
        count = np.full(total, 5.0, dtype=np.float32) if counting else \
            np.lib.stride_tricks.as_strided(np.full(1, 5.0, np.float32), (total,), (0,))
        cols = NewRowColumns(state, state0, last_seen, count, stamp, now, version)
        init.fill_new(keys, seed, weights, rows, start, cols)
        want = np.full((total, 5), 9.0, dtype=np.float32)
        init.fill_rows(keys, seed, want, rows)
        np.testing.assert_array_equal(weights, want)
        new = np.zeros(total, dtype=bool)
        new[rows] = True
        np.testing.assert_array_equal(state[new], np.broadcast_to(state0, (n, width)))
        assert (state[~new] == 7.0).all()
        assert (last_seen[new] == now).all() and (last_seen[~new] == -3).all()
        assert (stamp[new] == version).all() and (stamp[~new] == -4).all()
        if counting:
            assert (count[new] == 0.0).all() and (count[~new] == 5.0).all()
        else:
            assert count[0] == 5.0
        no_state = NewRowColumns(state, state0[:0], last_seen, count, stamp, now // 3, 0)
        before = state.copy()
        no_state.write(rows, start, n)  # metadata only; weights and state untouched
        np.testing.assert_array_equal(state, before)
        assert (last_seen[new] == now // 3).all() and (stamp[new] == 0).all()
