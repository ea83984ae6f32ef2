"""``kernels.find_gather`` / ``find_gather16`` (the read of ``table.lookup(keys)``) against a
dict reference, in both builds (serial and parallel), absent keys reading the default,
duplicates and empty batches included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.table import kernels
from kraken.table.index import HashIndex

_D = 5
_DEFAULT = np.float32(-0.5)


def _index_and_weights(n_live: int) -> tuple[HashIndex, np.ndarray, dict[int, int]]:
    """An index of ``n_live`` spread-out keys mapped to shuffled rows, the weights
    ``float32[n_live, _D]`` (row r holds r * 8 + j) and the key -> row dict."""
    rng = np.random.default_rng(n_live)
    keys = rng.choice(1 << 40, size=n_live, replace=False).astype(np.int64) - (1 << 39)
    rows = rng.permutation(n_live).astype(np.int64)
    index = HashIndex()
    index.insert(keys, rows)
    weights = (np.arange(n_live, dtype=np.float32)[:, None] * 8
               + np.arange(_D, dtype=np.float32)[None, :])
    return index, weights, dict(zip(keys.tolist(), rows.tolist()))


_INDEX, _WEIGHTS, _ROW_OF = _index_and_weights(3000)
_LIVE = np.fromiter(_ROW_OF, dtype=np.int64)


def _want(query: np.ndarray) -> np.ndarray:
    out = np.full((query.shape[0], _D), _DEFAULT, dtype=np.float32)
    for n, k in enumerate(query.tolist()):
        if k in _ROW_OF:
            out[n] = _WEIGHTS[_ROW_OF[k]]
    return out


@settings(max_examples=60, deadline=None)
@given(picks=st.lists(st.one_of(st.integers(0, _LIVE.shape[0] - 1),
                                st.integers(1, 1 << 62).map(lambda k: -k)),
                      max_size=200),
       work=st.sampled_from([0, 1 << 30]))
def test_find_gather_matches_a_dict(picks: list[int], work: int) -> None:
    # non-negative picks choose a live key (duplicates likely); negative ones are raw keys,
    # absent unless they happen to be live
    query = np.array([_LIVE[p] if p >= 0 else p for p in picks], dtype=np.int64)
    skeys, srows, mask = _INDEX.slots()
    out = np.full((query.shape[0], _D), np.nan, dtype=np.float32)
    kernels.find_gather(work, skeys, srows, mask, query, _WEIGHTS, _DEFAULT, out)
    np.testing.assert_array_equal(out, _want(query))


@pytest.mark.parametrize("work", [0, 1 << 30], ids=["serial", "parallel"])
def test_find_gather16_matches_the_float32_gather_of_decoded_rows(work: int) -> None:
    rng = np.random.default_rng(3)
    query = np.concatenate([rng.choice(_LIVE, 700), rng.integers(-(1 << 62), 1 << 62, 50)])
    bits = rng.integers(0, 1 << 16, size=_WEIGHTS.shape, dtype=np.uint64).astype(np.uint16)
    skeys, srows, mask = _INDEX.slots()
    got = np.zeros((query.shape[0], _D), dtype=np.uint32)
    kernels.find_gather16(work, skeys, srows, mask, query, bits, True, _DEFAULT.view(np.uint32),
                          got)
    decoded = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)  # bf16 -> float32
    want = np.full((query.shape[0], _D), _DEFAULT, dtype=np.float32)
    for n, k in enumerate(query.tolist()):
        if k in _ROW_OF:
            want[n] = decoded[_ROW_OF[k]]
    np.testing.assert_array_equal(got, want.view(np.uint32))
