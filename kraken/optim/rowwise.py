"""The row-wise accumulator step shared by :class:`RowWiseAdaGrad` and :class:`RAdaGrad`.

A row of ``D`` values is cut into segments of ``widths[0] + widths[1] + ... == D``
consecutive columns (by default one segment, the whole row). Each segment ``k`` has one
float32 accumulator (``state[:, k]``) fed by its own mean squared gradient::

    s_k = keep * s_k + add * mean(g[seg_k] * g[seg_k])
    w[seg_k] -= lr * g[seg_k] / (sqrt(s_k) + eps)

so an embedding and a first-order weight sharing one row (widths ``(D, 1)``) step exactly
as they would in two tables of their own. RowWiseAdaGrad is ``keep = add = 1`` (a plain
sum; multiplying by 1.0 is exact, so the result is bit for bit the sum); RAdaGrad is
``keep = decay, add = 1 - decay``.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from kraken._jit import batch_kernel
from kraken.errors import ConfigError, ShapeError
from kraken.optim.chains import AHEAD, NO_META, prefetch_rows, touch_row
from kraken.types import F32, Rows

__all__ = ["check_segments", "rowwise_step", "segment_count"]


@batch_kernel
def _rowwise(w, s, rows, g, lr, eps, keep, add, last_seen, stamp, now,
             version):  # pragma: no cover - numba
    d = w.shape[1]
    for i in nb.prange(rows.shape[0]):
        prefetch_rows(w, s, rows, i + AHEAD, rows.shape[0])
        r = rows[i]
        touch_row(last_seen, stamp, r, now, version)
        acc = np.float32(0.0)
        for j in range(d):
            acc += g[i, j] * g[i, j]
        v = keep * s[r, 0] + add * (acc / np.float32(d))
        s[r, 0] = v
        scale = lr / (np.float32(math.sqrt(v)) + eps)
        for j in range(d):
            w[r, j] -= scale * g[i, j]


@batch_kernel
def _rowwise_segments(w, s, rows, g, bounds, lr, eps, keep, add, last_seen, stamp, now,
                      version):  # pragma: no cover - numba
    n_seg = bounds.shape[0] - 1
    for i in nb.prange(rows.shape[0]):
        prefetch_rows(w, s, rows, i + AHEAD, rows.shape[0])
        r = rows[i]
        touch_row(last_seen, stamp, r, now, version)
        for k in range(n_seg):
            a, b = bounds[k], bounds[k + 1]
            acc = np.float32(0.0)
            for j in range(a, b):
                acc += g[i, j] * g[i, j]
            v = keep * s[r, k] + add * (acc / np.float32(b - a))
            s[r, k] = v
            scale = lr / (np.float32(math.sqrt(v)) + eps)
            for j in range(a, b):
                w[r, j] -= scale * g[i, j]


def check_segments(value: Any) -> tuple[int, ...]:
    """``segments`` as a tuple of widths >= 1 (``()``: one segment, the whole row).

    Accepts a list or tuple of ints (a list comes from JSON or TOML); anything else raises
    :class:`ConfigError` (``segments: ...``) naming the value.
    """
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"segments: expected a list of column widths (e.g. [16, 1]), "
                          f"got {value!r}")
    for w in value:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ConfigError(f"segments: every width must be an integer >= 1, got {w!r} "
                              f"in {value!r}")
    return tuple(int(w) for w in value)


def segment_count(segments: tuple[int, ...], dim: int) -> int:
    """Accumulators per row for a row of ``dim`` values: 1 without segments, else
    ``len(segments)``; raises :class:`ConfigError` (``segments: ...``) unless the widths
    sum to ``dim``."""
    if not segments:
        return 1
    if sum(segments) != dim:
        raise ConfigError(f"segments: widths {list(segments)} sum to {sum(segments)}, "
                          f"the row has dim {dim}")
    return len(segments)


def rowwise_step(weights: F32, state: F32, rows: Rows, grads: F32, lr: float, eps: float,
                 keep: float, add: float, segments: tuple[int, ...] = (),
                 last_seen: np.ndarray = NO_META, stamp: np.ndarray = NO_META, now: int = 0,
                 version: int = 0) -> None:
    """One step on ``weights[rows]: float32[U, D]`` and ``state[rows, :S]`` with
    ``grads: float32[U, D]``, in place; ``lr, eps, keep, add`` are rounded to float32 once.

    ``segments`` are the column widths of the ``S`` segments (``()``: ``S = 1``, the whole
    row); they must sum to ``D`` (else :class:`ShapeError`). ``keep`` and ``add`` are
    rounded separately, so RAdaGrad passes ``add = 1 - decay`` computed in float64
    (``1 - float32(0.9999)`` would be off by 1.7e-4 relative). With ``last_seen`` and
    ``stamp`` (``int32[R]``), also ``last_seen[rows] = now`` and ``stamp[rows] = version``
    in the same pass.
    """
    args = (np.float32(lr), np.float32(eps), np.float32(keep), np.float32(add))
    meta = (last_seen, stamp, np.int32(now), np.int32(version))
    if len(segments) <= 1:
        if segments and segments[0] != weights.shape[1]:
            raise ShapeError(f"weights: the optimizer's segments {list(segments)} need "
                             f"{segments[0]} columns, got {weights.shape[1]}")
        _rowwise(grads.size, weights, state, rows, grads, *args, *meta)
        return
    if sum(segments) != weights.shape[1]:
        raise ShapeError(f"weights: the optimizer's segments {list(segments)} need "
                         f"{sum(segments)} columns, got {weights.shape[1]}")
    bounds = np.zeros(len(segments) + 1, dtype=np.int64)
    np.cumsum(segments, out=bounds[1:])
    _rowwise_segments(grads.size, weights, state, rows, grads, bounds, *args, *meta)

