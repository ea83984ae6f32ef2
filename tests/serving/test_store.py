"""The weights-only store: one index for all tables, presence per table, 16-bit storage."""

from __future__ import annotations

import numpy as np
import pytest

from kraken.config import Precision
from kraken.errors import CapacityError, ShapeError
from kraken.serving.store import StoreTable, WeightStore, decode, encode


def _w(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_tables_share_keys_but_not_presence() -> None:
    s = WeightStore({"emb": StoreTable(4), "wide": StoreTable(1, default=0.5)}, capacity=10)
    keys = np.array([5, -7, 2**62], dtype=np.int64)
    s.upsert("emb", keys, _w(3, 4))
    s.upsert("wide", keys[:1], np.ones((1, 1), np.float32))
    assert len(s) == 3 and s.rows("emb") == 3 and s.rows("wide") == 1
    np.testing.assert_array_equal(s.lookup("emb", keys), _w(3, 4))
    np.testing.assert_array_equal(s.lookup("wide", keys), [[1.0], [0.5], [0.5]])
    s.delete("emb", keys[:2])
    assert len(s) == 2 and s.rows("emb") == 1  # key 5 lives on in "wide"
    np.testing.assert_array_equal(s.lookup("emb", keys)[:2], np.zeros((2, 4)))
    assert sorted(s.keys("emb").tolist()) == [2**62] and s.keys("wide").tolist() == [5]
    s.delete("wide", keys)  # absent ones ignored
    assert len(s) == 1 and s.rows("wide") == 0


def test_freed_rows_are_reused_within_capacity() -> None:
    s = WeightStore({"t": StoreTable(2)}, capacity=4)
    a, b = np.arange(4, dtype=np.int64), np.arange(10, 14, dtype=np.int64)
    s.upsert("t", a, _w(4, 2))
    with pytest.raises(CapacityError):
        s.upsert("t", np.array([99], dtype=np.int64), _w(1, 2))
    s.delete("t", a[:3])
    s.upsert("t", b[:3], _w(3, 2, 1))
    np.testing.assert_array_equal(s.lookup("t", b[:3]), _w(3, 2, 1))
    np.testing.assert_array_equal(s.lookup("t", a[3:]), _w(4, 2)[3:])
    with pytest.raises(ShapeError):
        s.upsert("t", b[:1], np.zeros((1, 3), np.float32))


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
def test_16bit_rounds_to_nearest_and_halves_the_rows(precision: Precision) -> None:
    x = _w(1000, 16) * 3
    y = decode(encode(x, precision), precision)
    rel = 2.0 ** (-11 if precision is Precision.FP16 else -8)
    assert np.all(np.abs(y - x) <= rel * np.abs(x) + 1e-7)
    s16 = WeightStore({"t": StoreTable(16, precision)}, capacity=5000)
    s32 = WeightStore({"t": StoreTable(16)}, capacity=5000)
    keys = np.arange(1000, dtype=np.int64)
    for s in (s16, s32):
        s.upsert("t", keys, x)
    np.testing.assert_array_equal(s16.lookup("t", keys), y)
    index = s32.memory_bytes - 1000 * 64  # one table: no presence byte
    assert s16.memory_bytes == index + 1000 * 32
