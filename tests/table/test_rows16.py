"""The push's 16-bit row kernels against the numpy codec: bit for bit, same generator draws."""

from __future__ import annotations

import numpy as np
import pytest

import kraken._jit
from kraken.config import Precision
from kraken.table import codec, rows16

GENERATORS = [np.random.PCG64, np.random.PCG64DXSM, np.random.SFC64, np.random.Philox,
              np.random.MT19937]


def _values(n: int) -> np.ndarray:
    """``float32[n, 3]``: random bit patterns (every exponent) and the fp16/bf16 edges:
    subnormals, the largest finite values and past them, signed zeros."""
    rng = np.random.default_rng(1)
    bits = np.concatenate([
        rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        np.arange(0x33000000 - 64, 0x39000000, 4099, dtype=np.uint32),  # fp16 subnormals
        np.arange(0x477F0000, 0x47800100, 257, dtype=np.uint32),  # around 65504 / 65520
        np.array([0, 0x00000001, 0x00800000, 0x3F800000, 0x7F7FFFFF], dtype=np.uint32)])
    bits = np.concatenate([bits, bits | np.uint32(0x80000000)])
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    return x[: x.shape[0] // 3 * 3].reshape(-1, 3).copy()


@pytest.mark.parametrize("build", ["serial", "parallel"])
@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16], ids=["fp16", "bf16"])
def test_write_and_read_are_the_codec_bit_for_bit(precision, build, monkeypatch) -> None:
    if build == "parallel":
        monkeypatch.setattr(kraken._jit, "PARALLEL_MIN_WORK", 0)
    x = _values(30_000)
    n = x.shape[0]
    rows = np.random.default_rng(2).permutation(n + 5)[:n].astype(np.int64)
    want = np.zeros((n + 5, 3), dtype=codec.STORAGE[precision])
    got = want.copy()
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    with np.errstate(over="ignore"):
        want[rows] = codec.encode(x, precision, r1)
    last_seen, stamp = np.zeros(n + 5, np.int32), np.zeros(n + 5, np.int32)
    state = np.full((n + 5, 2), -1.0, np.float32)  # the rows' optimizer state rides along
    state_rows = np.random.default_rng(3).standard_normal((n, 2)).astype(np.float32)
    rows16.write(got, rows, x, precision, r2, last_seen, stamp, 7, 9, state, state_rows)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    assert repr(r1.bit_generator.state) == repr(r2.bit_generator.state)
    touched = np.zeros(n + 5, bool)
    touched[rows] = True
    np.testing.assert_array_equal(last_seen, np.where(touched, 7, 0))
    np.testing.assert_array_equal(stamp, np.where(touched, 9, 0))
    want_state = np.full((n + 5, 2), -1.0, np.float32)
    want_state[rows] = state_rows
    np.testing.assert_array_equal(state, want_state)
    back = rows16.read(got, rows, precision)
    np.testing.assert_array_equal(back.view(np.uint32),
                                  codec.decode(want[rows], precision).view(np.uint32))
    back2, back_state = rows16.read(got, rows[::-1].copy(), precision, state)
    np.testing.assert_array_equal(back2.view(np.uint32), back[::-1].view(np.uint32))
    np.testing.assert_array_equal(back_state, state_rows[::-1])


def test_read_decodes_every_fp16_value() -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 1)
    got = rows16.read(every, np.arange(1 << 16, dtype=np.int64), Precision.FP16)[:, 0]
    want = every[:, 0].astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


@pytest.mark.parametrize("make", GENERATORS, ids=lambda g: g.__name__)
@pytest.mark.parametrize("before", [0, 1, 2])
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_uint32_draws_are_the_draws_numpy_makes(make, before, n) -> None:
    """What ``random(float32)`` and ``integers(0, 2**16, uint64)`` would draw, and the
    generator left in the same state (a 32-bit half may be pending from an odd count)."""
    a, b = np.random.Generator(make(9)), np.random.Generator(make(9))
    a.random(before, dtype=np.float32)
    b.random(before, dtype=np.float32)
    floats = (rows16.uint32_draws(b, n) >> 8).astype(np.float32) * np.float32(2.0**-24)
    np.testing.assert_array_equal(floats, a.random(n, dtype=np.float32))
    noise = (rows16.uint32_draws(b, n) >> 16).astype(np.uint64)
    np.testing.assert_array_equal(noise, a.integers(0, 1 << 16, n, dtype=np.uint64))
    assert repr(a.bit_generator.state) == repr(b.bit_generator.state)
