"""16-bit rows by row index: decode a gather, round and scatter back, in one parallel pass each.

The push of a table with fp16 or bf16 weights reads the rows it steps as float32 and writes
them back rounded stochastically. :mod:`kraken.table.codec` does both over whole arrays in
numpy (a fancy-index gather, then several passes for the rounding); these kernels do the
same per row, bit for bit, reading the random numbers the codec would draw, from the same
generator calls, so a table's results and its generator's state do not change::

    read(stored[R, D], rows[U])              -> float32[U, D]
    write(stored, rows, values[U, D], rng)   stored[rows] = encode(values, rng)

Both optionally carry the rows' optimizer state on the same pass (``read(..., state)``
gathers ``state[rows]``, ``write(..., state=, state_rows=)`` scatters it back), where numpy's
fancy indexing of a wide state (AdaGrad's and Adam's ``[R, D]`` and ``[R, 2D]``) took as
long as the rest of the push together. Every pass prefetches the rows ``ROW_AHEAD``
places on.

``stored`` is ``STORAGE[precision]`` (``float16``, or ``uint16`` holding bf16), viewed as
``uint16`` inside the kernels. Kernels are ``nogil``.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from kraken._jit import batch_kernel
from kraken.config import Precision
from kraken.optim.chains import NO_META, prefetch_row, touch_row

__all__ = ["ROW_AHEAD", "read", "uint32_draws", "write"]

ROW_AHEAD = 8
"""Rows ahead of the current one whose stored weights and state a pass prefetches."""

_NO_STATE = np.zeros((0, 0), dtype=np.float32)



@intrinsic
def _to_fp16(typingctx, x):  # pragma: no cover - numba
    """``_to_fp16(x: float32) -> uint16``: the fp16 bits of ``x`` rounded to nearest, ties to
    even (LLVM's ``fptrunc``: one instruction on x86 with F16C; numpy's ``astype(float16)``
    bit for bit on finite values, overflow to inf)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(x), codegen


@intrinsic
def _from_fp16(typingctx, h):  # pragma: no cover - numba
    """``_from_fp16(h: uint16) -> float32``: the value of fp16 bits ``h`` (exact)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(h), codegen


@nb.njit(cache=True, nogil=True, inline="always")
def _fp16_toward(h, up):  # pragma: no cover - numba
    """``np.nextafter(h, +inf if up else -inf)`` on fp16 bits ``h``."""
    if (h & 0x7C00) == 0x7C00 and (h & 0x3FF) != 0:  # NaN
        return h
    if (h & 0x7FFF) == 0:  # a zero steps to the smallest subnormal of the direction
        return np.uint16(0x0001) if up else np.uint16(0x8001)
    positive = (h & 0x8000) == 0
    if h == 0x7C00 and up or h == 0xFC00 and not up:  # already at the infinity
        return h
    return np.uint16(h + 1) if positive == up else np.uint16(h - 1)


@nb.njit(cache=True, nogil=True, inline="always")
def _ahead(stored, state, rows, p):  # pragma: no cover - numba
    """Prefetch row ``rows[p + ROW_AHEAD]`` of ``stored`` and (when it has rows) ``state``."""
    q = p + ROW_AHEAD
    if q < rows.shape[0]:
        prefetch_row(stored, rows[q])
        if state.shape[0]:
            prefetch_row(state, rows[q])


@nb.njit(cache=True, nogil=True, inline="always")
def _copy_state(src, r, dst, p):  # pragma: no cover - numba
    """``dst[p] = src[r]`` (nothing when ``dst`` has no rows)."""
    if dst.shape[0]:
        for j in range(dst.shape[1]):
            dst[p, j] = src[r, j]


@batch_kernel
def _read(stored, rows, bf16, out, out_bits, state, state_out):  # pragma: no cover - numba
    """``out[p] = decode(stored[rows[p]])``: fp16 through ``out`` (float32), bf16 through
    ``out_bits`` (the same array viewed as uint32); ``state_out[p] = state[rows[p]]``."""
    d = stored.shape[1]
    for p in nb.prange(rows.shape[0]):
        _ahead(stored, state, rows, p)
        r = rows[p]
        if bf16:
            for j in range(d):
                out_bits[p, j] = np.uint32(stored[r, j]) << np.uint32(16)
        else:
            for j in range(d):
                out[p, j] = _from_fp16(stored[r, j])
        _copy_state(state, r, state_out, p)


@batch_kernel
def _write(stored, rows, bf16, x, xb, draws, last_seen, stamp, now, version, state_in,
           state):  # pragma: no cover - numba
    """``stored[rows[p]] = encode(x[p])`` (``xb``: the same values viewed as uint32), with
    ``last_seen``/``stamp`` of the row and ``state[rows[p]] = state_in[p]`` when ``state_in``
    has rows. fp16 (``codec._to_fp16``): round to nearest, then to the other neighbour with
    probability ``(x - near) / (other - near)``, against the uniform float32 ``(draws >> 8)
    * 2**-24`` (numpy's ``random(dtype=float32)`` of the generator's 32-bit outputs
    ``draws``). bf16 (``codec._to_bf16``): the top 16 bits of ``bits + noise``, ``noise =
    draws >> 16`` (numpy's ``integers(0, 2**16, dtype=uint64)`` of the same outputs)."""
    d = stored.shape[1]
    scale = np.float32(1.0 / 16777216.0)
    for p in nb.prange(rows.shape[0]):
        _ahead(stored, state, rows, p)
        r = rows[p]
        touch_row(last_seen, stamp, r, now, version)
        _copy_state(state_in, p, state, r)
        if bf16:
            for j in range(d):
                noise = np.uint64(draws[p, j] >> np.uint32(16))
                stored[r, j] = np.uint16(((np.uint64(xb[p, j]) + noise) >> np.uint64(16))
                                         & np.uint64(0xFFFF))
        else:
            for j in range(d):
                h = _to_fp16(x[p, j])
                hf = _from_fp16(h)
                diff = x[p, j] - hf
                other = _fp16_toward(h, diff > 0)
                gap = _from_fp16(other) - hf
                prob = diff / gap if gap != 0 else np.float32(0.0)
                u = np.float32(draws[p, j] >> np.uint32(8)) * scale
                stored[r, j] = other if u < prob else h


def read(stored: np.ndarray, rows: np.ndarray, precision: Precision,
         state: np.ndarray = _NO_STATE) -> Any:
    """``float32[U, D]``: the 16-bit rows ``stored[rows]`` decoded (``codec.decode``, exact).

    With ``state`` (``float32[R, S]``, C-contiguous) returns ``(weights, state[rows])``, the
    state gathered on the same pass."""
    s_out = _NO_STATE if state is _NO_STATE else \
        np.empty((rows.shape[0], state.shape[1]), dtype=np.float32)
    out = np.empty((rows.shape[0], stored.shape[1]), dtype=np.float32)
    _read(rows.shape[0] * (stored.shape[1] + s_out.shape[1]), stored.view(np.uint16), rows,
          precision is not Precision.FP16, out, out.view(np.uint32), state, s_out)
    return out if state is _NO_STATE else (out, s_out)


def write(stored: np.ndarray, rows: np.ndarray, values: np.ndarray, precision: Precision,
          rng: np.random.Generator, last_seen: np.ndarray = NO_META,
          stamp: np.ndarray = NO_META, now: int = 0, version: int = 0,
          state: np.ndarray = _NO_STATE, state_rows: np.ndarray = _NO_STATE) -> None:
    """``stored[rows] = codec.encode(values, precision, rng)`` for distinct ``rows: int64[U]``
    and ``values: float32[U, D]`` (C-contiguous), bit for bit, leaving ``rng`` as ``encode``
    does; with ``last_seen`` and ``stamp`` (``int32[R]``) also ``last_seen[rows] = now`` and
    ``stamp[rows] = version``; with ``state`` (``float32[R, S]``) also ``state[rows] =
    state_rows`` (``float32[U, S]``)."""
    draws = uint32_draws(rng, values.size).reshape(values.shape)
    _write(values.size + state_rows.size, stored.view(np.uint16), rows,
           precision is not Precision.FP16, values, values.view(np.uint32), draws, last_seen,
           stamp, np.int32(now), np.int32(version), state_rows, state)


_BUFFERED = ("PCG64", "PCG64DXSM", "SFC64", "Philox")
"""Bit generators whose 32-bit outputs are the halves of their 64-bit ones, low half first,
the high half kept for the next call (``has_uint32``, ``uinteger`` in their state)."""


def uint32_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """``uint32[n]``: the next ``n`` 32-bit outputs of ``rng``'s bit generator, as numpy's
    ``random(n, dtype=float32)`` and ``integers(0, 2**16, n, dtype=uint64)`` consume them
    (one each), and ``rng`` left as after those calls.

    For the generators of :data:`_BUFFERED` (``default_rng``'s PCG64 among them) the 64-bit
    outputs are drawn in bulk (``random_raw``, about twice as fast as drawing floats);
    any other generator is asked for its 32-bit integers (``integers(0, 2**32)``, one
    output each)."""
    bg = rng.bit_generator
    state = bg.state
    if state.get("bit_generator") not in _BUFFERED or "has_uint32" not in state:
        return rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    out = np.empty(n, dtype=np.uint32)
    k = 0
    if state["has_uint32"] and n:
        out[0] = state["uinteger"]
        k = 1
    m = (n - k + 1) // 2
    halves = bg.random_raw(m).view(np.uint32)  # little-endian: low half first
    out[k:] = halves[:n - k]
    if m or k:  # numpy keeps the last high half; it is still to come if n - k is odd
        after = bg.state
        after["has_uint32"] = (n - k) % 2
        if m:
            after["uinteger"] = int(halves[-1])
        bg.state = after
    return out
