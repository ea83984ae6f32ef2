"""Optimizers through ``SparseTable.apply_gradients``: duplicates, absent keys, bad gradients,
and stochastic rounding of 16-bit weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kraken
from kraken import Precision, SparseTable, TableConfig

OPTIMIZERS = [kraken.SGD(lr=0.1), kraken.AdaGrad(lr=0.1), kraken.RowWiseAdaGrad(lr=0.1),
              kraken.RAdaGrad(lr=0.1), kraken.Adam(lr=0.1), kraken.FTRL(alpha=0.1, l1=0.01)]
PRECISIONS = [Precision.FP32, Precision.FP16, Precision.BF16]
DIM = 4
POOL = np.array([3, -7, 2**40, 11, 0, 2**63 - 1, 5, -(2**63)], dtype=np.int64)


def _table(opt, precision=Precision.FP32, keys=POOL, **kw) -> SparseTable:
    """A table holding ``keys`` (initial weights from the seeded initializer)."""
    t = SparseTable(TableConfig(dim=DIM, capacity=64, optimizer=opt, precision=precision,
                                initializer=kraken.Uniform(0.5), seed=7, **kw))
    t.lookup(keys, train=True, now=1)
    return t


def _rows(t: SparseTable) -> dict[str, np.ndarray]:
    """Every stored column, sorted by key, weights as raw bits (exact comparisons)."""
    r = t.export()
    order = np.argsort(r.keys)
    w = r.weights[order]
    return {"keys": r.keys[order], "weights": w.view(np.uint16 if w.itemsize == 2 else np.uint32),
            "state": r.state[order].view(np.uint32), "last_seen": r.last_seen[order],
            "count": r.count[order], "stamp": r.stamp[order]}


def _assert_same_rows(a: SparseTable, b: SparseTable) -> None:
    ra, rb = _rows(a), _rows(b)
    for name in ra:
        np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)


def _sum_in_order(keys: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys in first-occurrence order and their float32 gradient sums, added in order."""
    uniq: dict[int, np.ndarray] = {}
    for k, g in zip(keys.tolist(), grads, strict=True):
        uniq[k] = uniq[k] + g if k in uniq else np.float32(0.0) + g
    return (np.array(list(uniq), dtype=np.int64),
            np.array(list(uniq.values()), dtype=np.float32).reshape(len(uniq), DIM))


keys_with_duplicates = st.lists(st.sampled_from(POOL.tolist()), min_size=1, max_size=20)


@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: p.value)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.kind)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_duplicate_keys_are_summed_before_the_update(opt, precision, data) -> None:
    keys = np.array(data.draw(keys_with_duplicates), dtype=np.int64)
    grads = data.draw(hnp.arrays(np.float32, (keys.shape[0], DIM),
                                 elements=st.floats(-2, 2, width=32)))
    dup, once = _table(opt, precision), _table(opt, precision)
    ukeys, ugrads = _sum_in_order(keys, grads)

    dup.apply_gradients(keys, grads, now=2)
    once.apply_gradients(ukeys, ugrads, now=2)

    _assert_same_rows(dup, once)
    assert dup.stats().updated_rows == once.stats().updated_rows == ukeys.shape[0]


def test_duplicates_are_not_applied_one_by_one() -> None:
    """With a nonlinear optimizer, summing first and stepping twice really differ."""
    opt = kraken.AdaGrad(lr=0.1)
    summed, twice = _table(opt), _table(opt)
    g = np.ones((1, DIM), dtype=np.float32)
    summed.apply_gradients(np.array([5, 5]), np.concatenate([g, g]), now=2)
    twice.apply_gradients(np.array([5]), g, now=2)
    twice.apply_gradients(np.array([5]), g, now=2)
    assert not np.array_equal(summed.lookup([5]), twice.lookup([5]))
    np.testing.assert_array_equal(summed.export().state[summed.export().keys == 5],
                                  np.full((1, DIM), 4.0, dtype=np.float32))  # (1 + 1)^2


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.kind)
def test_gradients_of_absent_keys_are_dropped_and_counted(opt) -> None:
    present = POOL[:4]
    mixed, ref = _table(opt, keys=present), _table(opt, keys=present)
    keys = np.array([present[0], 99, present[2], 99, -5, present[0], 12345], dtype=np.int64)
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(keys.shape[0], DIM)).astype(np.float32)
    grads[keys == 99] = 1e6  # huge: would show if it were applied anywhere
    is_present = np.isin(keys, present)

    mixed.apply_gradients(keys, grads, now=2)
    ref.apply_gradients(keys[is_present], grads[is_present], now=2)

    _assert_same_rows(mixed, ref)
    assert not mixed.contains([99, -5, 12345]).any() and len(mixed) == present.shape[0]
    s = mixed.stats()
    assert s.dropped_gradients == 4 and s.updated_rows == 2
    mixed.apply_gradients(np.array([99, 98]), np.ones((2, DIM), np.float32), now=3)
    assert mixed.stats().dropped_gradients == 6, "the counter is cumulative"
    assert ref.stats().dropped_gradients == 0


BAD_GRADS = [
    ("nan", lambda n: np.where(np.arange(n * DIM).reshape(n, DIM) == n * DIM - 1, np.nan,
                               1.0).astype(np.float32), kraken.NonFiniteError, "NaN or inf"),
    ("inf", lambda n: np.full((n, DIM), np.inf, np.float32), kraken.NonFiniteError, "NaN or inf"),
    ("-inf", lambda n: np.concatenate([np.ones((n - 1, DIM), np.float32),
                                       np.full((1, DIM), -np.inf, np.float32)]),
     kraken.NonFiniteError, "NaN or inf"),
    ("float64", lambda n: np.ones((n, DIM), np.float64), kraken.DTypeError, "float32"),
    ("float16", lambda n: np.ones((n, DIM), np.float16), kraken.DTypeError, "float32"),
    ("int32", lambda n: np.ones((n, DIM), np.int32), kraken.DTypeError, "float32"),
    ("list", lambda n: [[1.0] * DIM] * n, kraken.DTypeError, "numpy array"),
    ("rows", lambda n: np.ones((n + 1, DIM), np.float32), kraken.ShapeError, "shape"),
    ("dim", lambda n: np.ones((n, DIM - 1), np.float32), kraken.ShapeError, "shape"),
    ("1-d", lambda n: np.ones(n * DIM, np.float32), kraken.ShapeError, "shape"),
    ("3-d", lambda n: np.ones((n, DIM, 1), np.float32), kraken.ShapeError, "shape"),
]


@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: p.value)
@pytest.mark.parametrize("opt", [kraken.Adam(lr=0.1), kraken.RowWiseAdaGrad(lr=0.1)],
                         ids=lambda o: o.kind)
@pytest.mark.parametrize("case, make, error, message", BAD_GRADS, ids=[c[0] for c in BAD_GRADS])
def test_bad_gradients_raise_and_change_nothing(opt, precision, case, make, error,
                                                message) -> None:
    t, twin = _table(opt, precision), _table(opt, precision)
    keys = np.concatenate([POOL, [424242]])  # an absent key too: not counted on error
    good = np.random.default_rng(1).normal(size=(keys.shape[0], DIM)).astype(np.float32)
    for table in (t, twin):
        table.apply_gradients(keys, good, now=2)
    before, stats = _rows(t), t.stats()
    _rows(twin)  # export hands out a version: keep the twin's versions in step

    with pytest.raises(error, match=message):
        t.apply_gradients(keys, make(keys.shape[0]), now=3)

    after, stats_after = _rows(t), t.stats()
    _rows(twin)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for field in ("updated_rows", "dropped_gradients", "clock", "live_rows"):
        assert getattr(stats_after, field) == getattr(stats, field), field
    # hidden state too (e.g. the stochastic-rounding generator): the next step matches a twin
    t.apply_gradients(keys, good, now=4)
    twin.apply_gradients(keys, good, now=4)
    _assert_same_rows(t, twin)


@pytest.mark.parametrize("opt", [kraken.Adam(lr=0.1), kraken.RowWiseAdaGrad(lr=0.1),
                                 kraken.AdaGrad(lr=0.1)], ids=lambda o: o.kind)
@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16], ids=lambda p: p.value)
def test_optimizer_state_stays_float32_with_16_bit_weights(opt, precision) -> None:
    """These optimizers' state depends on gradients only: equal to an fp32 table's, bit for bit."""
    low, ref = _table(opt, precision), _table(opt)
    grads = np.random.default_rng(2).normal(size=(POOL.shape[0], DIM)).astype(np.float32)
    for now in (2, 3):
        low.apply_gradients(POOL, grads, now=now)
        ref.apply_gradients(POOL, grads, now=now)
    assert low.export().state.dtype == np.float32
    np.testing.assert_array_equal(_rows(low)["state"], _rows(ref)["state"])


# -- stochastic rounding ---------------------------------------------------------------------


def _nearest_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even), back as float32."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("precision, delta, steps", [(Precision.FP16, 1e-4, 100),
                                                     (Precision.BF16, 1e-3, 50)],
                         ids=["fp16", "bf16"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["down", "up"])
def test_stochastic_rounding_is_unbiased(precision, delta, steps, sign) -> None:
    """Updates far below half an ulp move the mean of 16-bit rows as they move fp32 rows.

    Round-to-nearest would leave every row at 1.0: ``round(1 - delta) == 1`` in both formats.
    """
    n = 4000
    step = np.float32(sign * delta)
    nearest = (np.float16 if precision is Precision.FP16 else _nearest_bf16)
    assert np.float32(nearest(np.array([1.0 - step], np.float32))[0]) == 1.0

    keys = np.arange(n, dtype=np.int64)
    tables = {p: SparseTable(TableConfig(dim=1, capacity=n, optimizer=kraken.SGD(lr=1.0),
                                         precision=p, seed=3))
              for p in (precision, Precision.FP32)}
    for t in tables.values():
        t.assign(keys, np.ones((n, 1), np.float32), now=0)
        g = np.full((n, 1), step, dtype=np.float32)
        for k in range(steps):
            t.apply_gradients(keys, g, now=k + 1)
    low = tables[precision].lookup(keys)[:, 0].astype(np.float64)
    exact = tables[Precision.FP32].lookup(keys)[:, 0].astype(np.float64)

    assert np.all(exact == exact[0])
    moved = 1.0 - exact[0]
    np.testing.assert_allclose(moved, steps * float(step), rtol=1e-3)
    assert np.unique(low).shape[0] > 1, "rows took different rounding paths"
    stderr = low.std(ddof=1) / np.sqrt(n)
    assert abs(low.mean() - exact[0]) < 4.0 * stderr, (low.mean(), exact[0], stderr)
    assert abs(1.0 - low.mean()) > 0.9 * abs(moved), "the mean did not move"
