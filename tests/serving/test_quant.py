"""8-bit row-wise quantization against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kraken.serving.quant import EXTRA_BYTES, dequantize_rows, gather_int8, quantize_rows

_values = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
_rows = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 40).flatmap(
        lambda d: hnp.arrays(np.float32, (n, d), elements=_values)))


def _fields(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, scale and bias of ``q``, read as the layout documents (float64)."""
    d = q.shape[1] - EXTRA_BYTES
    scale = q[:, d:d + 2].copy().view("<f2").astype(np.float64)[:, 0]
    bias = q[:, d + 2:].copy().view("<f2").astype(np.float64)[:, 0]
    return q[:, :d].astype(np.float64), scale, bias


@settings(max_examples=150, deadline=None)
@given(_rows, st.floats(1e-6, 1.0))
def test_each_value_reads_back_within_half_its_rows_scale(x: np.ndarray, shrink: float) -> None:
    x = (x * np.float32(shrink)).astype(np.float32)  # small magnitudes too
    q = quantize_rows(x)
    assert q.dtype == np.uint8 and q.shape == (x.shape[0], x.shape[1] + EXTRA_BYTES)
    codes, scale, bias = _fields(q)
    x64 = x.astype(np.float64)
    # the reference: value = scale * code + bias, in float64
    ref = codes * scale[:, None] + bias[:, None]
    assert np.all(bias <= x64.min(axis=1)) and np.all(scale >= 0)
    assert np.all(ref.max(axis=1) >= x64.max(axis=1) - scale / 2)
    slack = 1e-6 * np.abs(x64) + 1e-30  # float32 rounding of the reference's inputs
    assert np.all(np.abs(ref - x64) <= scale[:, None] / 2 + slack)
    # the codes are the nearest ones: no other code reads back closer
    assert np.all(np.abs(ref - x64) <= np.abs(ref + scale[:, None] - x64) + slack)
    assert np.all(np.abs(ref - x64) <= np.abs(ref - scale[:, None] - x64) + slack)
    # scale is the smallest fp16 that spans the row (one fp16 step below does not)
    below = np.nextafter(scale.astype(np.float16), np.float16(0)).astype(np.float64)
    spans = bias + 255 * below >= x64.max(axis=1)
    assert not np.any(spans & (scale > 0))
    # decoding: numpy and the numba gather agree with the reference up to float32 rounding
    y = dequantize_rows(q)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-30)
    rows = np.arange(x.shape[0], dtype=np.int64)[::-1].copy()
    out = np.empty_like(x)
    gather_int8(q, rows, np.float32(0.0), out)
    np.testing.assert_array_equal(out, y[::-1])


def test_constant_zero_and_nan_rows_and_absent_rows() -> None:
    x = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, np.nan, 2.0], [-7.0, 3.0, 1e9]],
                 dtype=np.float32)
    q = quantize_rows(x)
    y = dequantize_rows(q)
    np.testing.assert_array_equal(y[:2], x[:2])  # fp16-exact constants read back exactly
    assert np.isnan(y[2]).all()  # a row with a NaN stays visibly broken
    assert y[3, 2] >= 65504 - _fields(q)[1][3] / 2  # clipped to fp16's range
    out = np.full((3, 3), 9.0, dtype=np.float32)
    gather_int8(q, np.array([1, -1, 0], dtype=np.int64), np.float32(0.25), out)
    np.testing.assert_array_equal(out, [[0.5] * 3, [0.25] * 3, [0.0] * 3])
    assert quantize_rows(np.zeros((0, 5), np.float32)).shape == (0, 9)
