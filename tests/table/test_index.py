"""HashIndex against a dict: batched insert / find / erase with growth and backward shift."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kraken.table.index import MAX_LOAD, HashIndex

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ops = st.lists(st.tuples(st.sampled_from(["insert", "erase", "find"]),
                         st.lists(int64s | st.integers(0, 40), max_size=60)), max_size=30)


@given(ops)
def test_index_matches_dict(program: list[tuple[str, list[int]]]) -> None:
    idx, ref = HashIndex(), {}
    next_row = 0
    for op, keys in program:
        arr = np.array(keys, dtype=np.int64)
        if op == "insert":
            uniq = list(dict.fromkeys(keys))
            rows = np.arange(next_row, next_row + len(uniq), dtype=np.int64)
            next_row += len(uniq)
            idx.insert(np.array(uniq, dtype=np.int64), rows)
            ref.update(zip(uniq, rows.tolist()))
        elif op == "erase":
            uniq = list(dict.fromkeys(keys))
            freed = idx.erase(np.array(uniq, dtype=np.int64))
            assert freed.tolist() == [ref.pop(k, -1) for k in uniq]
        else:
            assert idx.find(arr).tolist() == [ref.get(k, -1) for k in keys]
        assert len(idx) == len(ref)
        assert len(idx) <= idx.capacity * MAX_LOAD
    keys, rows = idx.items()
    assert dict(zip(keys.tolist(), rows.tolist())) == ref


def test_erase_keeps_colliding_chains_reachable() -> None:
    """Many keys on one probe chain; erasing from its middle must not strand the tail."""
    idx = HashIndex()
    keys = np.arange(0, 600, dtype=np.int64) * 1024  # same low bits before mixing
    idx.insert(keys, np.arange(600))
    idx.erase(keys[::3])
    found = idx.find(keys)
    assert (found[::3] == -1).all()
    alive = np.ones(600, dtype=bool)
    alive[::3] = False
    assert found[alive].tolist() == np.arange(600)[alive].tolist()


def test_growth_keeps_every_key() -> None:
    idx = HashIndex()
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, size=50_000, dtype=np.int64))
    for chunk in np.array_split(np.arange(keys.shape[0]), 7):
        idx.insert(keys[chunk], chunk)
    assert idx.capacity >= keys.shape[0] / MAX_LOAD
    assert (idx.find(keys) == np.arange(keys.shape[0])).all()


def test_large_batches_match_reference() -> None:
    """Batches big enough for the parallel find and for prefetching across growths."""
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, 120_000, dtype=np.int64))
    rng.shuffle(keys)
    keys = keys[:100_000]
    idx = HashIndex()
    idx.insert(keys[:60_000], np.arange(60_000))
    idx.insert(keys[60_000:], np.arange(60_000, 100_000))  # grows mid-way
    gone = idx.erase(keys[::2])
    assert gone.tolist() == list(range(0, 100_000, 2))
    query = np.concatenate([keys, rng.integers(0, 2**62, 50_000, dtype=np.int64)])
    expect = np.full(query.shape[0], -1, dtype=np.int64)
    expect[1:100_000:2] = np.arange(1, 100_000, 2)
    found = idx.find(query)
    assert (found[:100_000] == expect[:100_000]).all()
    assert (found[100_000:][~np.isin(query[100_000:], keys)] == -1).all()
    assert len(idx) == 50_000
