"""RowWiseAdaGrad, RAdaGrad and FTRL against the formulas of their docstrings, in float64.

Each reference below is a direct transcription of the module docstring, one row at a
time, in float64. The optimizers compute in float32, so they are compared with a
tolerance of a few float32 ulps per operation over ``STEPS`` steps. Rows that get no
gradient in a step are left out of ``rows`` and must not change.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kraken.optim import FTRL, Adam, RAdaGrad, RowWiseAdaGrad
from tests.optim.steps import run

STEPS = 5
_f32 = dict(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)
_grads = st.floats(-3, 3, **_f32)


@st.composite
def problems(draw, grad_elements=_grads):
    """``(w0 float32[R, D], grads float32[STEPS, R, D], touched bool[STEPS, R], seed)``."""
    r = draw(st.integers(1, 7))
    d = draw(st.integers(1, 16))
    w0 = draw(hnp.arrays(np.float32, (r, d), elements=st.floats(-1, 1, **_f32)))
    grads = draw(hnp.arrays(np.float32, (STEPS, r, d), elements=grad_elements))
    touched = draw(hnp.arrays(np.bool_, (STEPS, r)))
    return w0, grads, touched, draw(st.integers(0, 2**32 - 1))


def reference(step_row, w0, s0, grads, touched):
    """Apply ``step_row(w_row, s_row, g_row) -> (w_row, s_row)`` in float64."""
    w, s = w0.astype(np.float64), s0.astype(np.float64)
    for k in range(grads.shape[0]):
        for r in np.flatnonzero(touched[k]):
            w[r], s[r] = step_row(w[r], s[r], grads[k, r].astype(np.float64))
    return w, s


lrs = st.floats(1e-4, 1.0)
epss = st.sampled_from([1e-10, 1e-8, 1e-6, 1e-3])
init_accs = st.sampled_from([0.0, 0.01, 0.1, 1.0])


@settings(max_examples=40, deadline=None)
@given(problems(), lrs, epss, init_accs)
def test_rowwise_adagrad_matches_formula(problem, lr, eps, init_acc):
    w0, grads, touched, seed = problem
    opt = RowWiseAdaGrad(lr=lr, eps=eps, initial_accumulator=init_acc)
    w, s = run(opt, w0, grads, touched, seed)

    def step(w, s, g):  # s += mean(g*g); w -= lr * g / (sqrt(s) + eps)
        s = s + np.mean(g * g)
        return w - lr * g / (np.sqrt(s) + eps), s

    rw, rs = reference(step, w0, np.full((w0.shape[0], 1), init_acc), grads, touched)
    assert s.shape == (w0.shape[0], 1)
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-7, err_msg="accumulator")
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-6, err_msg="weights")


@settings(max_examples=40, deadline=None)
@given(problems(), lrs, epss, st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.9999, 1.0]),
       init_accs)
def test_radagrad_matches_formula(problem, lr, eps, decay, init_acc):
    w0, grads, touched, seed = problem
    opt = RAdaGrad(lr=lr, eps=eps, decay=decay, initial_accumulator=init_acc)
    w, s = run(opt, w0, grads, touched, seed)

    def step(w, s, g):  # v = decay * v + (1 - decay) * mean(g*g); w -= lr * g / (sqrt(v) + eps)
        s = decay * s + (1 - decay) * np.mean(g * g)
        return w - lr * g / (np.sqrt(s) + eps), s

    rw, rs = reference(step, w0, np.full((w0.shape[0], 1), init_acc), grads, touched)
    assert s.shape == (w0.shape[0], 1)
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-9, err_msg="second moment")
    # with decay = 1 and a zero accumulator the step is lr * g / eps: scale atol with it
    big = float(np.max(np.abs(rw), initial=1.0))
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-6 * big, err_msg="weights")


def test_radagrad_default_decay_is_exact_to_float32():
    """(1 - decay) must be rounded from float64: 1 - float32(0.9999) is 1.7e-4 off."""
    opt = RAdaGrad()
    w = np.zeros((1, 4), dtype=np.float32)
    s = np.zeros((1, 1), dtype=np.float32)
    opt.update(w, s, np.array([0], dtype=np.int64), np.full((1, 4), 2.0, dtype=np.float32))
    np.testing.assert_allclose(s[0, 0], (1 - 0.9999) * 4.0, rtol=1e-6)


# FTRL's n = sum(g*g) is float32: a gradient below ~3e-23 squares to 0 and with
# beta = l2 = 0 the float64 formula and float32 part ways (see the test after this one).
# Gradients here are 0 or at least 2**-20 in magnitude.
_ftrl_grads = st.one_of(st.just(0.0), st.floats(2**-20, 3, **_f32),
                       st.floats(-3, -(2**-20), **_f32))


@settings(max_examples=40, deadline=None)
@given(problems(_ftrl_grads), st.floats(1e-3, 1.0), st.sampled_from([0.0, 0.1, 1.0]),
       st.sampled_from([0.0, 0.01, 0.5]), st.sampled_from([0.0, 0.1, 1.0]))
def test_ftrl_matches_formula(problem, alpha, beta, l1, l2):
    w0, grads, touched, seed = problem
    opt = FTRL(alpha=alpha, beta=beta, l1=l1, l2=l2)
    w, s = run(opt, w0, grads, touched, seed)
    d = w0.shape[1]

    def step(w, s, g):
        z, n = s[:d], s[d:]
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
        z = z + g - sigma * w
        n = n + g * g
        with np.errstate(divide="ignore", invalid="ignore"):  # the branch not taken
            w = np.where(np.abs(z) <= l1, 0.0,
                         -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / alpha + l2))
        return w, np.concatenate([z, n])

    rw, rs = reference(step, w0, np.zeros((w0.shape[0], 2 * d)), grads, touched)
    assert s.shape == (w0.shape[0], 2 * d)
    np.testing.assert_allclose(s[:, d:], rs[:, d:], rtol=1e-5, atol=1e-7, err_msg="n")
    # z accumulates g - sigma * w; sigma = sqrt(n + g^2) - sqrt(n) cancels in float32
    np.testing.assert_allclose(s[:, :d], rs[:, :d], rtol=1e-5, atol=1e-6, err_msg="z")
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-6, err_msg="weights")
    never = ~touched.any(axis=0)
    np.testing.assert_array_equal(w[never], w0[never], err_msg="untouched rows moved")


@pytest.mark.parametrize("g", [1e-30, -1e-24, 0.0])
def test_ftrl_gradient_whose_square_underflows_gives_zero_weight(g):
    """beta = l2 = 0 and n = 0 in float32: the denominator is 0; w = 0, no 0-division."""
    opt = FTRL(alpha=1.0, beta=0.0, l1=0.0, l2=0.0)
    w = np.full((1, 2), 0.5, dtype=np.float32)
    s = np.zeros((1, 4), dtype=np.float32)
    opt.update(w, s, np.array([0], dtype=np.int64), np.full((1, 2), g, dtype=np.float32))
    np.testing.assert_array_equal(w, 0.0)
    np.testing.assert_array_equal(s[0, 2:], 0.0)  # n underflowed
    opt.update(w, s, np.array([0], dtype=np.int64), np.full((1, 2), 0.5, dtype=np.float32))
    np.testing.assert_allclose(w, -1.0, rtol=1e-6)  # then FTRL as usual: -z / sqrt(n)


def test_ftrl_l1_zeroes_small_coordinates():
    """Strong L1: every coordinate whose |z| <= l1 is exactly zero after the update."""
    opt = FTRL(alpha=0.1, beta=1.0, l1=1.0)
    w = np.zeros((1, 3), dtype=np.float32)  # w = 0, n = 0: z = g after the first step
    s = np.zeros((1, 6), dtype=np.float32)
    opt.update(w, s, np.array([0], dtype=np.int64),
               np.array([[0.5, -1.0, 3.0]], dtype=np.float32))
    np.testing.assert_array_equal(s[0], [0.5, -1.0, 3.0, 0.25, 1.0, 9.0])
    # w = -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha) = -(3 - 1) / 40
    np.testing.assert_allclose(w[0], [0.0, 0.0, -0.05], rtol=1e-6)


def test_adam_without_moment_decay_keeps_exactly_the_new_moments() -> None:
    """beta1 = beta2 = 0: m = g and v = g*g exactly. A small gradient after a large one
    once rounded v to 0 (g*g below v's last bit) beside m != 0: a step of m / eps, -inf
    with a tiny eps."""
    opt = Adam(lr=1e-6, beta1=0.0, beta2=0.0, eps=1e-44)
    w = np.zeros((1, 2), np.float32)
    s = np.empty((1, opt.state_width(2)), np.float32)
    opt.init_state(s)
    rows = np.arange(1, dtype=np.int64)
    opt.update(w, s, rows, np.array([[1.3, -2.0]], np.float32))
    g = np.array([[9.0e-5, -3.0e-5]], np.float32)
    opt.update(w, s, rows, g)
    np.testing.assert_array_equal(s[0, :2], g[0])
    np.testing.assert_array_equal(s[0, 2:4], g[0] * g[0])
    assert np.isfinite(w).all()
