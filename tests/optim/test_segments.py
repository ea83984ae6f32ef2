"""Row-wise optimizers over rows made of segments (``segments=(16, 1)``: embedding and
first-order weight in one row), against a per-segment float64 reference and against
the same optimizer run on each segment as a table of its own.

The reference transcribes :mod:`kraken.optim.rowwise`'s docstring: segment ``k`` of a
row has its own accumulator ``s_k``, fed by the mean squared gradient of that segment.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kraken.errors import ConfigError, ShapeError
from kraken.optim import RAdaGrad, RowWiseAdaGrad, optimizer_from_dict
from tests.optim.steps import run

STEPS = 4
_f32 = dict(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def segmented_problems(draw):
    """``(widths, w0 float32[R, D], grads float32[STEPS, R, D], touched bool[STEPS, R],
    seed)`` with ``sum(widths) == D``."""
    widths = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    r, d = draw(st.integers(1, 6)), sum(widths)
    w0 = draw(hnp.arrays(np.float32, (r, d), elements=st.floats(-1, 1, **_f32)))
    grads = draw(hnp.arrays(np.float32, (STEPS, r, d), elements=st.floats(-3, 3, **_f32)))
    touched = draw(hnp.arrays(np.bool_, (STEPS, r)))
    return widths, w0, grads, touched, draw(st.integers(0, 2**32 - 1))


def reference(widths, keep, add, lr, eps, init, w0, grads, touched):
    """Per row, per segment, in float64: ``s_k = keep*s_k + add*mean(g_k^2)``,
    ``w_k -= lr * g_k / (sqrt(s_k) + eps)``."""
    bounds = np.concatenate([[0], np.cumsum(widths)])
    w = w0.astype(np.float64)
    s = np.full((w0.shape[0], len(widths)), init, dtype=np.float64)
    for k in range(grads.shape[0]):
        for r in np.flatnonzero(touched[k]):
            g = grads[k, r].astype(np.float64)
            for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                s[r, j] = keep * s[r, j] + add * np.mean(g[a:b] ** 2)
                w[r, a:b] -= lr * g[a:b] / (np.sqrt(s[r, j]) + eps)
    return w, s


@settings(max_examples=30, deadline=None)
@given(segmented_problems(), st.floats(1e-4, 1.0), st.sampled_from([1e-10, 1e-6, 1e-3]),
       st.sampled_from([0.0, 0.1]), st.sampled_from([None, 0.0, 0.9, 0.9999, 1.0]))
def test_each_segment_steps_with_its_own_accumulator(problem, lr, eps, init, decay):
    widths, w0, grads, touched, seed = problem
    if decay is None:
        opt = RowWiseAdaGrad(lr=lr, eps=eps, initial_accumulator=init, segments=widths)
        keep, add = 1.0, 1.0
    else:
        opt = RAdaGrad(lr=lr, eps=eps, decay=decay, initial_accumulator=init, segments=widths)
        keep, add = decay, 1.0 - decay
    w, s = run(opt, w0, grads, touched, seed)
    rw, rs = reference(widths, keep, add, lr, eps, init, w0, grads, touched)
    assert s.shape == (w0.shape[0], len(widths))
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-9, err_msg="accumulators")
    big = float(np.max(np.abs(rw), initial=1.0))  # decay 1, zero state: steps of lr*g/eps
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-6 * big, err_msg="weights")


@pytest.mark.parametrize("cls", [RowWiseAdaGrad, RAdaGrad])
@settings(max_examples=15, deadline=None)
@given(problem=segmented_problems())
def test_a_row_of_segments_is_bit_for_bit_one_table_per_segment(cls, problem):
    """``[emb | wide]`` rows step exactly as an ``emb`` table and a ``wide`` table would."""
    widths, w0, grads, touched, seed = problem
    w, s = run(cls(lr=0.1, segments=widths), w0, grads, touched, seed)
    start = 0
    for k, width in enumerate(widths):
        part = np.ascontiguousarray(w0[:, start:start + width])
        gpart = np.ascontiguousarray(grads[:, :, start:start + width])
        wk, sk = run(cls(lr=0.1), part, gpart, touched, seed)
        np.testing.assert_array_equal(w[:, start:start + width], wk, err_msg=f"segment {k}")
        np.testing.assert_array_equal(s[:, k:k + 1], sk, err_msg=f"segment {k} state")
        start += width


@pytest.mark.parametrize("cls", [RowWiseAdaGrad, RAdaGrad])
def test_one_segment_is_the_default_bit_for_bit(cls):
    rng = np.random.default_rng(0)
    w0 = rng.uniform(-1, 1, (9, 16)).astype(np.float32)
    grads = rng.normal(size=(STEPS, 9, 16)).astype(np.float32)
    touched = rng.random((STEPS, 9)) < 0.7
    wa, sa = run(cls(lr=0.1), w0, grads, touched, 1)
    wb, sb = run(cls(lr=0.1, segments=(16,)), w0, grads, touched, 1)
    assert sa.shape == sb.shape == (9, 1)
    np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("cls", [RowWiseAdaGrad, RAdaGrad])
def test_segments_configure_and_round_trip(cls):
    opt = optimizer_from_dict({"type": cls.kind, "segments": [16, 1]})
    assert opt.segments == (16, 1) and opt.state_width(17) == 2
    assert optimizer_from_dict(opt.to_dict()) == opt
    assert cls().state_width(17) == 1  # default: the whole row is one segment
    with pytest.raises(ConfigError, match=r"^segments: widths \[16, 1\] sum to 17, the row "
                                          r"has dim 16"):
        opt.state_width(16)
    for bad in ([0], [16, -1], [2.5], "16", [True]):
        with pytest.raises(ConfigError, match=r"^t\.optimizer\.segments: "):
            optimizer_from_dict({"type": cls.kind, "segments": bad}, "t.optimizer")
    w = np.zeros((2, 16), np.float32)
    s = np.zeros((2, 2), np.float32)
    with pytest.raises(ShapeError, match="segments"):
        opt.update(w, s, np.arange(2, dtype=np.int64), w)
