"""Row-wise AdaGrad: one accumulator per row, ``s += mean(g*g); w -= lr * g / (sqrt(s) + eps)``.

State width 1, so a dim-16 row costs 68 bytes instead of AdaGrad's 128. This is the
optimizer large production systems use for embeddings. With ``segments`` (column widths
summing to the row's dim, e.g. ``(16, 1)`` for an embedding and its first-order weight in
one row) each segment keeps its own accumulator: state width ``len(segments)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.config import check_number
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.optim.chains import sum_chains
from kraken.optim.rowwise import check_segments, rowwise_step, segment_count
from kraken.types import F32, Rows


@register
@dataclasses.dataclass(frozen=True)
class RowWiseAdaGrad(SparseOptimizer):
    """AdaGrad with a single float32 accumulator per row (mean of squared gradients), or
    one per segment of ``segments`` (``()``: the whole row is one segment)."""

    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator: float = 0.0
    segments: tuple[int, ...] = ()
    kind = "rowwise_adagrad"

    def __post_init__(self) -> None:
        _check_common(self)
        check_number("initial_accumulator", self.initial_accumulator, lo=0.0)
        object.__setattr__(self, "segments", check_segments(self.segments))

    def state_width(self, dim: int) -> int:
        return segment_count(self.segments, dim)

    def init_state(self, state: F32) -> None:
        state[...] = self.initial_accumulator

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        rowwise_step(weights, state, rows, grads, self.lr, self.eps, keep=1.0, add=1.0,
                     segments=self.segments)

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        # the summed gradients first, then the step: measured faster than one fused pass
        rowwise_step(weights, state, rows, sum_chains(grads, first, nxt), self.lr, self.eps,
                     keep=1.0, add=1.0, segments=self.segments, last_seen=last_seen,
                     stamp=stamp, now=now, version=version)
