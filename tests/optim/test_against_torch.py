"""SGD, AdaGrad and Adam step for step against their torch counterparts.

Each case runs ``STEPS`` updates of our optimizer on float32 rows and the same steps of
torch on the same rows, then compares weights and optimizer state to float32-rounding
tolerance. Rows are passed to ``update`` in a shuffled order, so a kernel that pairs
``grads[i]`` with the wrong row fails. Rows that receive no gradient in a step are left
out of ``rows`` (ours) and get a zero gradient (torch, where that is a no-op).

Our Adam is lazy (per-row step count), so it is compared with ``torch.optim.SparseAdam``
only when every row is touched every step; the subset case runs against a float64
numpy reference of lazy Adam written below.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kraken.optim import SGD, AdaGrad, Adam

STEPS = 5
RTOL, ATOL = 1e-5, 1e-7  # float32 rounding: both sides do the same float32 operations

_f32 = dict(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def problems(draw, subset: bool):
    """``(w0 float32[R, D], grads float32[STEPS, R, D], touched bool[STEPS, R], perm seed)``."""
    r = draw(st.integers(1, 7))
    d = draw(st.integers(1, 9))
    w0 = draw(hnp.arrays(np.float32, (r, d), elements=st.floats(-1, 1, **_f32)))
    grads = draw(hnp.arrays(np.float32, (STEPS, r, d), elements=st.floats(-3, 3, **_f32)))
    if subset:
        touched = draw(hnp.arrays(np.bool_, (STEPS, r)))
    else:
        touched = np.ones((STEPS, r), dtype=bool)
    seed = draw(st.integers(0, 2**32 - 1))
    return w0, grads, touched, seed


def _rows(touched_step: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Touched row indices in a random order, as ``int64``."""
    rows = np.flatnonzero(touched_step).astype(np.int64)
    rng.shuffle(rows)
    return rows


def _run_ours(opt, w0, grads, touched, seed):
    w = w0.copy()
    s = np.empty((w.shape[0], opt.state_width(w.shape[1])), dtype=np.float32)
    opt.init_state(s)
    rng = np.random.default_rng(seed)
    for k in range(grads.shape[0]):
        rows = _rows(touched[k], rng)
        opt.update(w, s, rows, np.ascontiguousarray(grads[k][rows]))
    return w, s


def _run_torch_dense(make_opt, w0, grads, touched):
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = make_opt([p])
    for k in range(grads.shape[0]):
        g = grads[k] * touched[k][:, None]
        p.grad = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32))
        opt.step()
    return p.detach().numpy(), opt.state[p]


def _close(ours, theirs, what, scale=0.0):
    """Equal to float32 rounding; ``scale``: the largest magnitude the values passed
    through, where one side may round differently (e.g. a fused multiply-add), so a result
    that cancelled down to near zero keeps the absolute error of its operands."""
    atol = max(ATOL, 4 * STEPS * float(np.finfo(np.float32).eps) * scale)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=atol, err_msg=what)


@settings(max_examples=40, deadline=None)
@given(problems(subset=True), st.floats(1e-4, 1.0))
def test_sgd_matches_torch_sgd(problem, lr):
    w0, grads, touched, seed = problem
    opt = SGD(lr=lr)
    w, s = _run_ours(opt, w0, grads, touched, seed)
    tw, _ = _run_torch_dense(lambda p: torch.optim.SGD(p, lr=lr), w0, grads, touched)
    assert s.shape == (w0.shape[0], 0)
    # w - lr * g, with or without a fused multiply-add: 1 ulp of the operands a step
    scale = float(np.abs(w0).max()) + lr * float(np.abs(grads).max(axis=(1, 2)).sum())
    _close(w, tw, "weights", scale)


@settings(max_examples=40, deadline=None)
@given(problems(subset=True), st.floats(1e-4, 1.0), st.sampled_from([1e-10, 1e-8, 1e-6, 1e-3]),
       st.sampled_from([0.0, 0.01, 0.1, 1.0]))
def test_adagrad_matches_torch_adagrad(problem, lr, eps, init_acc):
    w0, grads, touched, seed = problem
    opt = AdaGrad(lr=lr, eps=eps, initial_accumulator=init_acc)
    w, s = _run_ours(opt, w0, grads, touched, seed)
    tw, tstate = _run_torch_dense(
        lambda p: torch.optim.Adagrad(p, lr=lr, eps=eps, initial_accumulator_value=init_acc),
        w0, grads, touched)
    _close(w, tw, "weights")
    _close(s, tstate["sum"].numpy(), "accumulator")


adam_hparams = st.tuples(
    st.floats(1e-4, 0.3),                                 # lr
    st.sampled_from([0.0, 0.5, 0.9, 0.99]),               # beta1
    st.sampled_from([0.9, 0.99, 0.999, 0.9999]),          # beta2
    st.sampled_from([1e-8, 1e-6, 1e-3]),                  # eps
)


@settings(max_examples=40, deadline=None)
@given(problems(subset=False), adam_hparams)
def test_adam_matches_torch_sparse_adam_when_every_row_is_touched(problem, hp):
    w0, grads, touched, seed = problem
    lr, b1, b2, eps = hp
    r, d = w0.shape
    w, s = _run_ours(Adam(lr=lr, beta1=b1, beta2=b2, eps=eps), w0, grads, touched, seed)

    emb = torch.nn.Embedding(r, d, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w0))
    topt = torch.optim.SparseAdam(emb.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    idx = torch.arange(r)
    for k in range(STEPS):
        topt.zero_grad()
        (emb(idx) * torch.from_numpy(grads[k])).sum().backward()
        assert emb.weight.grad.is_sparse
        topt.step()
    ts = topt.state[emb.weight]

    _close(w, emb.weight.detach().numpy(), "weights")
    _close(s[:, :d], ts["exp_avg"].numpy(), "first moment m")
    _close(s[:, d:2 * d], ts["exp_avg_sq"].numpy(), "second moment v")
    assert (s[:, 2 * d] == STEPS).all(), "per-row step count"


def lazy_adam_reference(w0, grads, touched, lr, b1, b2, eps):
    """Lazy Adam in float64: moments and bias correction of a row advance only when it
    gets a gradient. Returns ``(w, m, v, t)``."""
    w = w0.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    t = np.zeros(w.shape[0])
    for k in range(grads.shape[0]):
        for r in np.flatnonzero(touched[k]):
            g = grads[k, r].astype(np.float64)
            t[r] += 1
            m[r] = b1 * m[r] + (1 - b1) * g
            v[r] = b2 * v[r] + (1 - b2) * g * g
            step = lr * np.sqrt(1 - b2 ** t[r]) / (1 - b1 ** t[r])
            w[r] -= step * m[r] / (np.sqrt(v[r]) + eps)
    return w, m, v, t


@settings(max_examples=40, deadline=None)
@given(problems(subset=True), adam_hparams)
def test_lazy_adam_matches_reference_when_some_rows_are_skipped(problem, hp):
    w0, grads, touched, seed = problem
    lr, b1, b2, eps = hp
    d = w0.shape[1]
    w, s = _run_ours(Adam(lr=lr, beta1=b1, beta2=b2, eps=eps), w0, grads, touched, seed)
    rw, rm, rv, rt = lazy_adam_reference(w0, grads, touched, lr, b1, b2, eps)
    # float32 against float64: a few ulps per operation, times STEPS
    np.testing.assert_allclose(w, rw, rtol=2e-5, atol=2e-6 * max(lr, 1e-2), err_msg="weights")
    np.testing.assert_allclose(s[:, :d], rm, rtol=2e-5, atol=1e-6, err_msg="m")
    np.testing.assert_allclose(s[:, d:2 * d], rv, rtol=2e-5, atol=1e-6, err_msg="v")
    np.testing.assert_array_equal(s[:, 2 * d], rt, err_msg="per-row step count")
    never = ~touched.any(axis=0)
    np.testing.assert_array_equal(w[never], w0[never], err_msg="rows never touched moved")


def test_lazy_adam_differs_from_sparse_adam_on_skipped_rows():
    """Sanity check of the test above: with a skipped step, the per-row count matters."""
    w0 = np.zeros((2, 1), dtype=np.float32)
    grads = np.ones((2, 2, 1), dtype=np.float32)
    touched = np.array([[True, False], [True, True]])
    w, s = _run_ours(Adam(lr=0.1), w0, grads, touched, 0)
    assert s[0, 2] == 2 and s[1, 2] == 1
    # row 1's first step is a full bias-corrected step of size lr, as row 0's first was
    np.testing.assert_allclose(w[1, 0], -0.1, rtol=1e-5)
    np.testing.assert_allclose(w[0, 0], -0.2, rtol=1e-5)
