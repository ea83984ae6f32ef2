"""8-bit row-wise quantization of weights, in FBGEMM's fused layout (``SbHalf``).

A row of ``D`` float32 values is stored as ``D + 4`` bytes::

    uint8[N, D + 4]   [ q_0 q_1 ... q_{D-1} | scale (fp16, 2 B) | bias (fp16, 2 B) ]
    value_j = scale * q_j + bias        q_j in [0, 255], scale and bias little-endian fp16

Per row: ``bias`` is the row's minimum rounded *down* to fp16 and ``scale`` is
``(max - bias) / 255`` rounded *up* to fp16, so every value lies in
``[bias, bias + 255 * scale]`` and ``q_j = round((x_j - bias) / scale)`` reads back within
``scale / 2`` of ``x_j`` (plus float32 rounding of the decode). A constant row has
``scale = 0`` and reads back as its value rounded to fp16 (exactly, for ``bias``
representable). Values are clipped to fp16's finite range (+-65504) first; a row with a NaN
gets ``scale = bias = NaN`` and reads back as NaN (garbage in stays visible).

Quantization runs at upsert time in numpy over whole batches; dequantization runs in the
gather, a numba kernel over the requested rows (:func:`gather_int8`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["EXTRA_BYTES", "dequantize_rows", "gather_int8", "quantize_rows"]

EXTRA_BYTES = 4
"""Bytes a row carries beside its ``D`` codes: fp16 scale and fp16 bias."""

_FP16_MAX = np.float32(65504.0)


def _fp16_down(x: np.ndarray) -> np.ndarray:
    """``float16`` not above ``x`` (float32, finite, within fp16 range), nearest such."""
    h = x.astype(np.float16)
    over = h.astype(np.float32) > x
    h[over] = np.nextafter(h[over], np.float16(-np.inf))
    return h


def _fp16_up(x: np.ndarray) -> np.ndarray:
    """``float16`` not below ``x`` (float32, finite, >= 0), nearest such."""
    h = x.astype(np.float16)
    under = h.astype(np.float32) < x
    h[under] = np.nextafter(h[under], np.float16(np.inf))
    return h


def quantize_rows(x: np.ndarray) -> np.ndarray:
    """``float32[N, D]`` to ``uint8[N, D + 4]`` (see the module docstring)."""
    n, d = x.shape
    out = np.empty((n, d + EXTRA_BYTES), dtype=np.uint8)
    if n == 0:
        return out
    with np.errstate(invalid="ignore"):
        v = np.clip(x.astype(np.float32, copy=False), -_FP16_MAX, _FP16_MAX)
    bad = np.isnan(v).any(axis=1)
    if bad.any():
        v = v.copy()
        v[bad] = 0.0
    lo, hi = v.min(axis=1), v.max(axis=1)
    bias = _fp16_down(lo)
    b32 = bias.astype(np.float32)
    # (hi - b32) / 255 in float64 so the upward rounding to fp16 bounds the exact value
    scale = _fp16_up(((hi.astype(np.float64) - b32) / 255.0).astype(np.float32))
    s32 = scale.astype(np.float64)
    exact = s32 * 255.0 < hi.astype(np.float64) - b32  # float32 rounding of the quotient
    if exact.any():
        scale[exact] = np.nextafter(scale[exact], np.float16(np.inf))
        s32 = scale.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s32[:, None] > 0, (v - b32[:, None]) / s32[:, None], 0.0)
    out[:, :d] = np.clip(np.rint(q), 0, 255).astype(np.uint8)
    scale[bad] = np.float16(np.nan)
    bias[bad] = np.float16(np.nan)
    out[:, d:d + 2] = scale.astype("<f2").view(np.uint8).reshape(n, 2)
    out[:, d + 2:] = bias.astype("<f2").view(np.uint8).reshape(n, 2)
    return out


def dequantize_rows(q: np.ndarray) -> np.ndarray:
    """``uint8[N, D + 4]`` back to ``float32[N, D]`` (numpy; the gather uses numba)."""
    n, d = q.shape[0], q.shape[1] - EXTRA_BYTES
    scale = np.ascontiguousarray(q[:, d:d + 2]).view("<f2").astype(np.float32)
    bias = np.ascontiguousarray(q[:, d + 2:]).view("<f2").astype(np.float32)
    return (q[:, :d].astype(np.float32) * scale.reshape(n, 1) + bias.reshape(n, 1))


@nb.njit(cache=True, nogil=True, inline="always")
def _half(lo, hi):  # pragma: no cover - numba
    """The fp16 value of little-endian bytes ``lo, hi`` as float32 (exact)."""
    bits = np.int64(lo) | (np.int64(hi) << 8)
    e = (bits >> 10) & 0x1F
    m = bits & 0x3FF
    if e == 0:
        v = np.float32(m) * np.float32(2.0 ** -24)
    elif e == 31:
        v = np.float32(np.inf) if m == 0 else np.float32(np.nan)
    else:
        v = np.float32(1024 + m) * np.float32(2.0 ** (e - 25))
    return -v if bits >> 15 else v


@nb.njit(cache=True, nogil=True)
def gather_int8(stored, rows, default, out):  # pragma: no cover - numba
    """``out[n] = dequantize(stored[rows[n]])``, or ``default`` where ``rows[n] < 0``.

    ``stored uint8[R, D + 4]``, ``rows int64[N]``, ``default float32``, ``out float32[N, D]``.
    """
    d = out.shape[1]
    for n in range(rows.shape[0]):
        r = rows[n]
        if r < 0:
            for j in range(d):
                out[n, j] = default
            continue
        scale = _half(stored[r, d], stored[r, d + 1])
        bias = _half(stored[r, d + 2], stored[r, d + 3])
        for j in range(d):
            out[n, j] = scale * np.float32(stored[r, j]) + bias
