"""Runs a sparse optimizer over drawn steps, the way the property tests compare it."""

from __future__ import annotations

import numpy as np


def run(opt, w0, grads, touched, seed):
    """``opt`` over ``grads: float32[S, R, D]`` from ``w0: float32[R, D]``; step ``k`` updates
    the rows where ``touched[k]`` holds, passed in a shuffled order (seeded). Returns
    ``(weights, state)``."""
    w = w0.copy()
    s = np.empty((w.shape[0], opt.state_width(w.shape[1])), dtype=np.float32)
    opt.init_state(s)
    rng = np.random.default_rng(seed)
    for k in range(grads.shape[0]):
        rows = np.flatnonzero(touched[k]).astype(np.int64)
        rng.shuffle(rows)
        opt.update(w, s, rows, np.ascontiguousarray(grads[k][rows]))
    return w, s
