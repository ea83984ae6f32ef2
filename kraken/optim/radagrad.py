"""RAdaGrad, the row-wise RMSProp-style optimizer of the Kraken paper.

One float32 second moment per row, decayed exponentially::

    v = decay * v + (1 - decay) * mean(g * g)
    w -= lr * g / (sqrt(v) + eps)

The paper's artifact declared this row-wise but still allocated a state tensor
the size of the embedding table; here the state really is one float per row (or one per
segment of ``segments``, see :mod:`kraken.optim.rowwise`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.config import check_fraction, check_number
from kraken.optim.base import SparseOptimizer, _check_common, register
from kraken.optim.chains import sum_chains
from kraken.optim.rowwise import check_segments, rowwise_step, segment_count
from kraken.types import F32, Rows


@register
@dataclasses.dataclass(frozen=True)
class RAdaGrad(SparseOptimizer):
    """Row-wise RMSProp (decay 0.9999 by default) with one float32 per row, or one per
    segment of ``segments`` (``()``: the whole row is one segment)."""

    lr: float = 0.01
    eps: float = 1e-8
    decay: float = 0.9999
    initial_accumulator: float = 0.0
    segments: tuple[int, ...] = ()
    kind = "radagrad"

    def __post_init__(self) -> None:
        _check_common(self)
        check_fraction("decay", self.decay)
        check_number("initial_accumulator", self.initial_accumulator, lo=0.0)
        object.__setattr__(self, "segments", check_segments(self.segments))

    def state_width(self, dim: int) -> int:
        return segment_count(self.segments, dim)

    def init_state(self, state: F32) -> None:
        state[...] = self.initial_accumulator

    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        # 1 - decay is rounded to float32 once, from float64
        rowwise_step(weights, state, rows, grads, self.lr, self.eps, keep=self.decay,
                     add=1.0 - self.decay, segments=self.segments)

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        # the summed gradients first, then the step: measured faster than one fused pass
        rowwise_step(weights, state, rows, sum_chains(grads, first, nxt), self.lr, self.eps,
                     keep=self.decay, add=1.0 - self.decay, segments=self.segments,
                     last_seen=last_seen, stamp=stamp, now=now, version=version)
