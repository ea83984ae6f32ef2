"""The 16-bit weight codec: how ``float32`` weights are stored as fp16 or bf16 and read back.

``STORAGE[precision]`` is the numpy dtype of stored weights: ``float32``, ``float16``, or
``uint16`` holding the upper 16 bits of a float32 (bf16). ``encode`` turns ``float32[...]``
into that dtype and ``decode`` turns it back into ``float32[...]`` (same shape). For fp32
both return their input unchanged (no copy). ``decode(encode(x))`` is exact for values
already representable in the precision.

Rounding: to nearest (ties to even) without a generator; with one, stochastic and unbiased
(the expected decoded value equals the float32 input), so updates smaller than half an ulp
still move 16-bit weights on average. Only numpy is used, over whole arrays.
"""

from __future__ import annotations

import numpy as np

from kraken.config import Precision

__all__ = ["STORAGE", "decode", "encode"]

STORAGE: dict[Precision, type] = {Precision.FP32: np.float32, Precision.FP16: np.float16,
                                  Precision.BF16: np.uint16}


def encode(values: np.ndarray, precision: Precision,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """``float32[...]`` to ``STORAGE[precision]``; stochastic rounding when ``rng`` is given."""
    if precision is Precision.FP32:
        return values
    if precision is Precision.FP16:
        return _to_fp16(values, rng)
    return _to_bf16(values, rng)


def decode(stored: np.ndarray, precision: Precision) -> np.ndarray:
    """``STORAGE[precision]`` values back to ``float32`` (a new array unless fp32)."""
    if precision is Precision.FP32:
        return stored
    if precision is Precision.FP16:
        return stored.astype(np.float32)
    return (stored.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _to_bf16(x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    if rng is None:  # round to nearest, ties to even
        bits += np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))
    else:
        bits += rng.integers(0, 1 << 16, size=x.shape, dtype=np.uint64)
    return (bits >> np.uint64(16)).astype(np.uint16)


def _to_fp16(x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    h = x.astype(np.float16)
    if rng is None:
        return h
    hf = h.astype(np.float32)
    diff = x - hf
    other = np.nextafter(h, np.where(diff > 0, np.float16(np.inf), np.float16(-np.inf)))
    gap = other.astype(np.float32) - hf
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(gap != 0, diff / gap, 0.0)
    up = rng.random(size=x.shape, dtype=np.float32) < p
    return np.where(up, other, h)
