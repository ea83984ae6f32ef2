"""The weights-only store: one index for all tables, presence per table, 16- and 8-bit rows."""

from __future__ import annotations

import numpy as np
import pytest

from kraken.config import Precision
from kraken.errors import CapacityError, ConfigError, ShapeError
from kraken.serving import Replica
from kraken.serving.quant import dequantize_rows, quantize_rows
from kraken.serving.store import StoreTable, WeightFormat, WeightStore, decode, encode


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


def test_int8_rows_quantize_small_tables_stay_fp16_and_presence_still_counts() -> None:
    s = WeightStore({"emb": StoreTable(16, "int8"), "wide": StoreTable(1, "int8", 0.5)},
                    capacity=3000)
    assert s.tables["emb"].format is WeightFormat.INT8
    assert s.tables["wide"].format is WeightFormat.FP16  # 1 + 4 bytes would be more than 2
    x, keys = _w(2000, 16), np.arange(2000, dtype=np.int64) * 7919
    s.upsert("emb", keys, x)
    s.upsert("wide", keys[:5], np.full((5, 1), 0.25, np.float32))
    np.testing.assert_array_equal(s.lookup("emb", keys), dequantize_rows(quantize_rows(x)))
    np.testing.assert_array_equal(s.lookup("wide", keys[3:7]), [[0.25]] * 2 + [[0.5]] * 2)
    s.delete("emb", keys[:10])
    got = s.lookup("emb", np.concatenate([keys[:10], [-1]]))
    np.testing.assert_array_equal(got, np.zeros((11, 16), np.float32))
    assert s.rows("emb") == 1990 and len(s) == 1995  # keys 0-4 live on in "wide"
    assert s.row_bytes == 20 + 2 + 1
    assert s.memory_bytes == s.index_bytes + 2000 * 23 + 8 * 5


def test_a_bad_format_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^precision: expected one of .*'int8'.*got 'int4'"):
        StoreTable(16, "int4")
    with pytest.raises(ConfigError, match=r"^precision: .*got 'fp8'"):
        Replica(precision="fp8")
    assert Replica(precision="auto").precision is None
    assert Replica(precision=Precision.BF16).precision is WeightFormat.BF16
