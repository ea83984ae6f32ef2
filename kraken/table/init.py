"""Seeded, order-independent initialisers for new rows.

A new row's initial weights are a pure function of ``(key, seed)``: a counter-based
generator (``fmix64`` of the key, the seed and the column) feeds uniform or
Box-Muller normal draws. The same key therefore gets the same initial row
whatever the insertion order, after an eviction and readmission, or on another
shard, which keeps training deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.config import Tagged, build_from_dict, check_number
from kraken.table.index import fmix64
from kraken.types import F32, Keys

__all__ = ["Initializer", "NewRowColumns", "Normal", "Uniform", "Zeros",
           "initializer_from_dict"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_INV_2_53 = 1.0 / 9007199254740992.0


@nb.njit(cache=True, nogil=True, inline="always")
def _uniform01(key, seed, j):  # pragma: no cover - numba
    h = fmix64(np.uint64(key) ^ fmix64(np.uint64(seed) * _GOLDEN + np.uint64(j) + np.uint64(1)))
    return float(h >> np.uint64(11)) * _INV_2_53


@nb.njit(cache=True, nogil=True)
def _column_salts(seed, n):  # pragma: no cover - numba
    """``uint64[n]``: the key-independent half of :func:`_uniform01` for columns ``0 .. n-1``
    (``_uniform01(k, seed, j) == _draw(k, salts[j])``), computed once per batch."""
    out = np.empty(n, dtype=np.uint64)
    for j in range(n):
        out[j] = fmix64(np.uint64(seed) * _GOLDEN + np.uint64(j) + np.uint64(1))
    return out


@nb.njit(cache=True, nogil=True, inline="always")
def _draw(key, salt):  # pragma: no cover - numba
    return float(fmix64(np.uint64(key) ^ salt) >> np.uint64(11)) * _INV_2_53


@nb.njit(cache=True, nogil=True, inline="always")
def _init_row(out, i, k, salts, mode, param):  # pragma: no cover - numba
    """Row ``out[i]`` of key ``k``: zeros (mode 0), uniform (1) or Box-Muller normal (2)."""
    d = out.shape[1]
    if mode == 0:
        for j in range(d):
            out[i, j] = 0.0
    elif mode == 1:
        for j in range(d):
            out[i, j] = np.float32((2.0 * _draw(k, salts[j]) - 1.0) * param)
    else:
        for j in range(d):
            u1 = _draw(k, salts[2 * j])
            u2 = _draw(k, salts[2 * j + 1])
            r = math.sqrt(-2.0 * math.log(1.0 - u1))
            out[i, j] = np.float32(r * math.cos(2.0 * math.pi * u2) * param)


@batch_kernel
def _init_rows(out, keys, salts, mode, param):  # pragma: no cover - numba
    for i in nb.prange(keys.shape[0]):
        _init_row(out, i, keys[i], salts, mode, param)


@batch_kernel
def _init_rows_at(out, rows, keys, salts, mode, param):  # pragma: no cover - numba
    for i in nb.prange(keys.shape[0]):
        _init_row(out, rows[i], keys[i], salts, mode, param)


@batch_kernel
def _fresh_rows(weights, rows, start, keys, salts, mode, param, state, state0, last_seen, count,
                stamp, now, version):  # pragma: no cover - numba
    """New rows in one pass: row ``r`` of key ``keys[i]`` (``r = start + i`` when ``start >= 0``,
    else ``rows[i]``) gets its initial weights (``mode >= 0``; ``mode < 0`` leaves ``weights``
    alone), ``state[r] = state0`` (when ``state0`` is not empty), ``last_seen[r] = now``,
    ``count[r] = 0`` (unless ``count`` has zero stride) and ``stamp[r] = version``. Each row's
    columns are written by one thread, so in the parallel build the first writes into fresh
    pages (their page faults) spread over the cores."""
    counting = count.strides[0] != 0
    s_width = state0.shape[0]
    for i in nb.prange(keys.shape[0]):
        r = start + i if start >= 0 else rows[i]
        if mode >= 0:
            _init_row(weights, r, keys[i], salts, mode, param)
        for j in range(s_width):
            state[r, j] = state0[j]
        last_seen[r] = now
        stamp[r] = version
        if counting:
            count[r] = np.float32(0.0)


@batch_kernel
def _uniform01_kernel(keys, seed, out):  # pragma: no cover - numba
    for i in nb.prange(keys.shape[0]):
        out[i] = _uniform01(keys[i], seed, 0)


def _uniform01_batch(keys: Keys, seed: int) -> np.ndarray:
    """``float64[N]`` uniform draws in [0, 1), a pure function of ``(key, seed)``."""
    out = np.empty(keys.shape[0], dtype=np.float64)
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    _uniform01_kernel(keys.shape[0] * 4, keys, np.uint64(seed), out)
    return out


class Initializer(Tagged):
    """Base of the initialisers; ``fill(keys, seed, out)`` writes ``out: float32[U, D]``."""

    _mode: ClassVar[int]

    def _param(self) -> float:
        return 0.0

    def fill(self, keys: Keys, seed: int, out: F32) -> None:
        """Write the initial rows of ``keys: int64[U]`` into ``out: float32[U, D]``."""
        salts = _column_salts(np.uint64(seed), 2 * out.shape[1])
        _init_rows(out.size, out, keys, salts, self._mode, self._param())

    def fill_rows(self, keys: Keys, seed: int, out: F32, rows: np.ndarray) -> None:
        """Write the initial row of ``keys[i]`` into ``out[rows[i]]`` (``keys: int64[U]``,
        distinct ``rows: int64[U]``, ``out: float32[R, D]``, e.g. the arena's weights):
        the values :meth:`fill` gives, without a temporary. A subclass that overrides only
        :meth:`fill` gets it through a temporary."""
        if type(self).fill is not Initializer.fill:
            tmp = np.empty((keys.shape[0], out.shape[1]), dtype=np.float32)
            self.fill(keys, seed, tmp)
            out[rows] = tmp
            return
        salts = _column_salts(np.uint64(seed), 2 * out.shape[1])
        _init_rows_at(keys.shape[0] * out.shape[1], out, rows, keys, salts, self._mode,
                      self._param())

    def fill_new(self, keys: Keys, seed: int, weights: F32, rows: np.ndarray, start: int,
                 cols: NewRowColumns) -> None:
        """New rows in one pass: :meth:`fill_rows` of ``keys: int64[U]`` into ``weights``
        (float32 ``[R, D]``) and the other columns of ``cols``, row ``start + i`` for key
        ``i`` when ``start >= 0`` (a run of consecutive rows), else ``rows[i]`` (distinct
        ``rows: int64[U]``). The same values as :meth:`fill_rows` followed by
        :meth:`NewRowColumns.write`; a subclass that overrides only :meth:`fill` gets them
        in two passes."""
        u = keys.shape[0]
        if type(self).fill is not Initializer.fill:
            at = rows if start < 0 else np.arange(start, start + u, dtype=np.int64)
            self.fill_rows(keys, seed, weights, at)
            cols.write(rows, start, u)
            return
        salts = _column_salts(np.uint64(seed), 2 * weights.shape[1])
        _fresh_rows(u * (weights.shape[1] + cols.state0.shape[0] + 3), weights, rows, start,
                    keys, salts, self._mode, self._param(), cols.state, cols.state0,
                    cols.last_seen, cols.count, cols.stamp, cols.now, cols.version)


@dataclasses.dataclass(frozen=True)
class NewRowColumns:
    """What a new row gets besides its weights (columns of
    :class:`~kraken.table.arena.RowArena`): ``state: float32[R, S]`` gets ``state0:
    float32[S]`` (the optimizer's initial state of a row; an empty ``state0`` leaves
    ``state`` to the caller), ``last_seen: int32[R]`` gets ``now``, ``count: float32[R]``
    gets 0 (a zero-stride ``count`` is left alone), ``stamp: int32[R]`` gets ``version``."""

    state: np.ndarray
    state0: np.ndarray
    last_seen: np.ndarray
    count: np.ndarray
    stamp: np.ndarray
    now: int
    version: int

    def write(self, rows: np.ndarray, start: int, n: int) -> None:
        """These columns of rows ``start .. start + n - 1`` (``start >= 0``) or of distinct
        ``rows: int64[n]``, weights untouched."""
        _fresh_rows(n * (self.state0.shape[0] + 3), _NO_WEIGHTS, rows, start,
                    np.zeros(n, dtype=np.int64), _NO_SALTS, -1, 0.0, self.state, self.state0,
                    self.last_seen, self.count, self.stamp, self.now, self.version)


_NO_WEIGHTS = np.zeros((1, 1), dtype=np.float32)
_NO_SALTS = np.zeros(2, dtype=np.uint64)


@dataclasses.dataclass(frozen=True)
class Zeros(Initializer):
    """All-zero rows (the usual choice for FTRL and for wide/linear parts)."""

    kind = "zeros"
    _mode = 0


@dataclasses.dataclass(frozen=True)
class Uniform(Initializer):
    """Uniform in ``[-scale, scale)``."""

    scale: float = 0.05
    kind = "uniform"
    _mode = 1

    def __post_init__(self) -> None:
        check_number("scale", self.scale, lo=0.0)

    def _param(self) -> float:
        return float(self.scale)


@dataclasses.dataclass(frozen=True)
class Normal(Initializer):
    """Normal with mean 0 and standard deviation ``std``."""

    std: float = 0.01
    kind = "normal"
    _mode = 2

    def __post_init__(self) -> None:
        check_number("std", self.std, lo=0.0)

    def _param(self) -> float:
        return float(self.std)


_INITS: dict[str, type[Initializer]] = {c.kind: c for c in (Zeros, Uniform, Normal)}


def initializer_from_dict(d: dict[str, Any], path: str = "initializer") -> Initializer:
    """Inverse of ``Initializer.to_dict``."""
    return build_from_dict(_INITS, d, path)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class Columns(Initializer):
    """A row composed by column ranges: ``parts[k]`` fills the next ``widths[k]`` columns.

    ``Columns(widths=(16, 1), parts=(Uniform(0.05), Zeros()))`` starts an embedding
    uniform and the first-order weight stored after it in the same row at zero. Each part
    draws its columns as it would for a row of its own width (column ``j`` of a part is
    its column ``j``), so the first ``widths[0]`` columns equal ``parts[0]`` alone. The row
    has ``sum(widths)`` values (:attr:`width`); a table checks it against its ``dim``.
    Written in a config file as
    ``{ type = "columns", widths = [16, 1], parts = [{ type = "uniform" }, { type = "zeros" }] }``.
    """

    widths: tuple[int, ...] = ()
    parts: tuple[Initializer, ...] = ()
    kind = "columns"

    def __post_init__(self) -> None:
        from kraken.errors import ConfigError  # noqa: PLC0415 - appended class, local import

        for name, value in (("widths", self.widths), ("parts", self.parts)):
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(f"{name}: expected a non-empty list, got {value!r}")
        if len(self.widths) != len(self.parts):
            raise ConfigError(f"parts: {len(self.parts)} initializers for "
                              f"{len(self.widths)} widths {list(self.widths)}")
        for w in self.widths:
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ConfigError(f"widths: every width must be an integer >= 1, got {w!r} "
                                  f"in {self.widths!r}")
        parts = []
        for i, p in enumerate(self.parts):
            p = initializer_from_dict(p, f"parts[{i}]") if isinstance(p, dict) else p
            if not isinstance(p, Initializer) or isinstance(p, Columns):
                raise ConfigError(f"parts[{i}]: expected a plain initializer (zeros, uniform, "
                                  f"normal), got {p!r}")
            parts.append(p)
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "parts", tuple(parts))

    @property
    def width(self) -> int:
        """Values per row: ``sum(widths)``."""
        return sum(self.widths)

    def fill(self, keys: Keys, seed: int, out: F32) -> None:
        """Write ``out: float32[U, sum(widths)]`` part by part (column ranges)."""
        from kraken.errors import ShapeError  # noqa: PLC0415 - appended class, local import

        if out.ndim != 2 or out.shape[1] != self.width:
            raise ShapeError(f"out: expected float32[U, {self.width}] (widths "
                             f"{list(self.widths)}), got shape {out.shape}")
        start = 0
        for w, p in zip(self.widths, self.parts):  # each part into its own C-order block
            block = np.empty((out.shape[0], w), dtype=np.float32)
            p.fill(keys, seed, block)
            out[:, start:start + w] = block
            start += w

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "widths": list(self.widths),
                "parts": [p.to_dict() for p in self.parts]}


_INITS[Columns.kind] = Columns
__all__ += ["Columns"]
