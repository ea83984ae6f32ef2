"""Growing the hash index: every key survives, and the old slots' memory is handed back
block by block while they are moved (not held until the new index is full)."""

from __future__ import annotations

import numpy as np

from kraken.table.index import MAX_LOAD, HashIndex


def test_growth_moves_every_key_and_returns_the_old_pages() -> None:
    idx = HashIndex()
    keys = np.random.default_rng(5).integers(-(2**63), 2**63 - 1, size=700_000, dtype=np.int64)
    keys = np.unique(keys)
    idx.insert(keys, np.arange(keys.shape[0]))
    old_keys, old_rows, _ = idx.slots()
    cap = idx.capacity
    more = keys[:1] ^ 0x5A5A  # one new key past MAX_LOAD
    idx.reserve(int(cap * MAX_LOAD) - len(idx) + 1)
    assert idx.capacity == 2 * cap
    idx.insert(more, np.array([keys.shape[0]]))
    np.testing.assert_array_equal(idx.find(keys), np.arange(keys.shape[0]))
    assert idx.find(more).tolist() == [keys.shape[0]]
    # the outgrown arrays were given back page by page: they read as zeros now
    assert not old_rows.any() and not old_keys.any()
