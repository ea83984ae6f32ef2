"""Field namespacing, precision, initialisation determinism, shapes and thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kraken
from kraken.table import TableConfig, field_keys, split_keys


@given(st.integers(0, 255), st.lists(st.integers(0, 2**56 - 1), max_size=20))
def test_field_keys_round_trip(field: int, ids: list[int]) -> None:
    keys = field_keys(field, np.array(ids, dtype=np.uint64))
    f, i = split_keys(keys)
    assert (f == field).all() and i.tolist() == ids


def test_fields_sharing_a_table_do_not_collide() -> None:
    t = kraken.SparseTable(TableConfig(dim=2))
    a, b = field_keys(1, np.arange(100)), field_keys(2, np.arange(100))
    t.lookup(np.concatenate([a, b]), train=True, now=0)
    assert len(t) == 200
    assert not np.array_equal(t.lookup(a), t.lookup(b))


def test_field_out_of_range() -> None:
    with pytest.raises(kraken.InputError, match="field must be in"):
        field_keys(256, np.arange(3))


def test_lookup_keeps_the_key_shape_and_accepts_uint64() -> None:
    t = kraken.SparseTable(TableConfig(dim=3))
    keys = np.arange(24, dtype=np.uint64).reshape(2, 3, 4)
    assert t.lookup(keys, train=True).shape == (2, 3, 4, 3)
    big = np.array([2**64 - 1], dtype=np.uint64)
    t.lookup(big, train=True)
    assert t.contains(np.array([-1]))[0]


def test_initial_rows_depend_only_on_key_and_seed() -> None:
    keys = np.arange(1000, dtype=np.int64) * 31
    rows = []
    for order in (keys, keys[::-1]):
        t = kraken.SparseTable(TableConfig(dim=4, initializer=kraken.Normal(0.5), seed=11))
        t.lookup(order, train=True)
        rows.append(t.lookup(keys))
    np.testing.assert_array_equal(rows[0], rows[1])
    assert abs(rows[0].std() - 0.5) < 0.03 and abs(rows[0].mean()) < 0.03
    other = kraken.SparseTable(TableConfig(dim=4, initializer=kraken.Normal(0.5), seed=12))
    other.lookup(keys, train=True)
    assert not np.array_equal(other.lookup(keys), rows[0])
    u = kraken.SparseTable(TableConfig(dim=4, initializer=kraken.Uniform(0.1)))
    vals = u.lookup(keys, train=True)
    assert vals.min() >= -0.1 and vals.max() < 0.1 and vals.std() > 0.05


@pytest.mark.parametrize("precision, tol", [(kraken.Precision.FP16, 1e-3),
                                            (kraken.Precision.BF16, 8e-3)])
def test_16_bit_storage_reads_close_to_fp32(precision, tol) -> None:
    keys = np.arange(500)
    ref = kraken.SparseTable(TableConfig(dim=8, initializer=kraken.Uniform(1.0)))
    low = kraken.SparseTable(TableConfig(dim=8, initializer=kraken.Uniform(1.0),
                                         precision=precision))
    a, b = ref.lookup(keys, train=True), low.lookup(keys, train=True)
    assert np.abs(a - b).max() <= tol and not np.array_equal(a, b)
    assert low.stats().memory_bytes < ref.stats().memory_bytes


def test_concurrent_verbs_keep_the_table_consistent() -> None:
    t = kraken.SparseTable(TableConfig(dim=4, capacity=100_000))
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            rng = np.random.default_rng(offset)
            for step in range(30):
                keys = rng.integers(0, 20_000, size=500)
                t.lookup(keys, train=True, now=step)
                t.apply_gradients(keys, np.ones((500, 4), np.float32), now=step)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    rows = t.export()
    assert len(np.unique(rows.keys)) == len(t) == t.stats().admitted
