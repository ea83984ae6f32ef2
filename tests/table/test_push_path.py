"""The fused push path (``kraken.table.push`` + ``update_groups``) against a plain reference:
gradients summed per key in numpy, in occurrence order, then the optimizer's ``update``.

Both builds of every kernel run: the serial one, and the parallel one (forced by lowering
``PARALLEL_MIN_WORK``, which otherwise only batches of 2**18 values reach).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kraken
import kraken._jit
from kraken import SparseTable, TableConfig
from kraken.optim.chains import sum_chains
from kraken.table import push

OPTIMIZERS = [kraken.SGD(lr=0.1), kraken.AdaGrad(lr=0.1, initial_accumulator=0.1),
              kraken.Adam(lr=0.1), kraken.Adam(lr=0.01, beta1=0.0, beta2=0.9),
              kraken.FTRL(alpha=0.1, l1=0.01), kraken.RowWiseAdaGrad(lr=0.1),
              kraken.RAdaGrad(lr=0.1, decay=0.9), kraken.RowWiseAdaGrad(lr=0.1, segments=(2, 1))]
IDS = ["sgd", "adagrad", "adam", "adam-beta1=0", "ftrl", "rowwise_adagrad", "radagrad",
       "rowwise_adagrad-segments"]
DIM = 3
PRESENT = 12  # keys 0 .. 11 hold rows; 12 .. 15 are absent

FIXTURE = [HealthCheck.function_scoped_fixture]  # ``build`` only selects a kernel build
_f32 = dict(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@pytest.fixture(params=["serial", "parallel"])
def build(request, monkeypatch):
    if request.param == "parallel":
        monkeypatch.setattr(kraken._jit, "PARALLEL_MIN_WORK", 0)
    return request.param


def _reference_sums(keys: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys in first-occurrence order; each sum starts as its first gradient and
    adds the later ones in order (float32), as the push path does."""
    order: list[int] = []
    sums: dict[int, np.ndarray] = {}
    for k, g in zip(keys.tolist(), grads, strict=True):
        if k in sums:
            sums[k] = (sums[k] + g).astype(np.float32)
        else:
            order.append(k)
            sums[k] = g.copy()
    return (np.array(order, dtype=np.int64),
            np.array([sums[k] for k in order], dtype=np.float32).reshape(len(order),
                                                                         grads.shape[1]))


def _table(opt, seed: int) -> SparseTable:
    t = SparseTable(TableConfig(dim=DIM, capacity=64, optimizer=opt,
                                initializer=kraken.Uniform(0.5), seed=seed))
    t.lookup(np.arange(PRESENT), train=True, now=1)
    return t


batches = st.integers(1, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.int64, n, elements=st.integers(0, PRESENT + 3)),
    hnp.arrays(np.float32, (n, DIM), elements=st.floats(-2, 2, **_f32))))


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE)
@given(steps=st.lists(batches, min_size=1, max_size=3), seed=st.integers(0, 3))
def test_push_matches_sum_by_key_then_plain_update(build, opt, steps, seed) -> None:
    table = _table(opt, seed)
    rows = table.export()
    order = np.argsort(rows.keys)
    w, s = rows.weights[order].copy(), rows.state[order].copy()  # reference, by key
    last_seen = np.ones(PRESENT, dtype=np.int32)
    dropped = updated = 0
    for now, (keys, grads) in enumerate(steps, start=2):
        table.apply_gradients(keys, grads, now=now)
        present = keys < PRESENT
        ukeys, sums = _reference_sums(keys[present], grads[present])
        opt.update(w, s, ukeys, sums)
        last_seen[ukeys] = now
        dropped += int(np.count_nonzero(~present))
        updated += ukeys.shape[0]
    got = table.export()
    order = np.argsort(got.keys)
    np.testing.assert_array_equal(got.keys[order], np.arange(PRESENT))
    np.testing.assert_array_equal(got.weights[order], w)
    np.testing.assert_array_equal(got.state[order], s)
    np.testing.assert_array_equal(got.last_seen[order], last_seen)
    st_ = table.stats()
    assert (st_.dropped_gradients, st_.updated_rows) == (dropped, updated)


@pytest.mark.parametrize("opt", [OPTIMIZERS[2], OPTIMIZERS[5]], ids=[IDS[2], IDS[5]])
@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE)
@given(batch=batches, bad_at=st.integers(0, 10**6), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_non_finite_gradient_anywhere_changes_nothing(build, opt, batch, bad_at, bad) -> None:
    keys, grads = batch
    grads = grads.copy()
    grads.reshape(-1)[bad_at % grads.size] = bad  # of a present or an absent key
    table = _table(opt, 0)
    before, stats = table.export(), table.stats()
    with pytest.raises(kraken.NonFiniteError, match="1 NaN or inf"):
        table.apply_gradients(keys, grads, now=5)
    after = table.export()
    for name in ("keys", "weights", "state", "last_seen", "count", "stamp"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
    s = table.stats()
    assert (s.updated_rows, s.dropped_gradients, s.clock) == \
        (stats.updated_rows, stats.dropped_gradients, stats.clock)


@st.composite
def groups(draw):
    """``(owner int64[N], rows int64[U], first int32[U], nxt int32[N], grads float32[N, D])``:
    ``N`` gradients of ``U`` distinct rows (``owner``) among ``R = 40``, linked in order."""
    n = draw(st.integers(1, 60))
    owner = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 39)))
    grads = draw(hnp.arrays(np.float32, (n, DIM), elements=st.floats(-2, 2, **_f32)))
    rows, first = np.unique(owner, return_index=True)
    rows, first = rows[np.argsort(first)], np.sort(first)
    nxt = np.full(n, -1, dtype=np.int32)
    for r in rows:
        occ = np.flatnonzero(owner == r)
        nxt[occ[:-1]] = occ[1:]
    return owner, rows, first.astype(np.int32), nxt, grads


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE)
@given(g=groups(), counts=hnp.arrays(np.int32, 40, elements=st.integers(0, 300)),
       seed=st.integers(0, 2**32 - 1))
def test_update_groups_equals_update_of_the_summed_gradients(build, opt, g, counts,
                                                              seed) -> None:
    """Bit for bit, from any reachable state; Adam's rows at many step counts (its per-task
    memo of step sizes is keyed by count modulo 64: 0 and 64 share a slot)."""
    owner, rows, first, nxt, grads = g
    urows, sums = _reference_sums(owner, grads)
    np.testing.assert_array_equal(urows, rows)
    np.testing.assert_array_equal(sum_chains(grads, first, nxt), sums)
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (40, DIM)).astype(np.float32)
    s = rng.uniform(0, 1, (40, opt.state_width(DIM))).astype(np.float32)  # accumulators >= 0
    if isinstance(opt, kraken.Adam):
        s[:, 2 * DIM] = counts
    w2, s2 = w.copy(), s.copy()
    opt.update_groups(w, s, rows, grads, first, nxt)
    opt.update(w2, s2, rows, sums)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(s, s2)


# the hash scratch, the direct-indexed one (bound = the arena's high water), and a bound
# too low for the rows (the direct chain gives up and the hash one runs)
BOUNDS = {"hash": lambda t: None, "direct": lambda t: t._arena.high_water, "low": lambda t: 1}


@pytest.mark.parametrize("bound", list(BOUNDS))
def test_group_links_duplicates_in_order_and_leaves_its_scratch_empty(bound) -> None:
    t = _table(kraken.SGD(), 0)
    skeys, srows, mask = t._index.slots()
    keys = np.array([7, 9, 7, 42, 7, 9], dtype=np.int64)
    g = push.group(skeys, srows, mask, keys, np.ones((6, DIM), np.float32), BOUNDS[bound](t))
    want_rows = t._index.find(np.array([7, 9]))
    np.testing.assert_array_equal(g.rows, want_rows)
    np.testing.assert_array_equal(g.first, [0, 1])
    np.testing.assert_array_equal(g.nxt, [2, 5, 4, -1, -1, -1])
    assert (g.dropped, g.nonfinite) == (1, 0)
    assert (push._scratch(6) == -1).all()
    assert (push._direct_scratch(t._arena.high_water) == -1).all()


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE)
@given(batch=batches)
def test_group_is_the_same_with_a_direct_or_hash_scratch(build, batch) -> None:
    keys, grads = batch
    t = _table(kraken.SGD(), 0)
    skeys, srows, mask = t._index.slots()
    want = push.group(skeys, srows, mask, keys, grads)
    for bound in ("direct", "low"):
        g = push.group(skeys, srows, mask, keys, grads, BOUNDS[bound](t))
        np.testing.assert_array_equal(g.rows, want.rows)
        np.testing.assert_array_equal(g.first, want.first)
        np.testing.assert_array_equal(g.nxt, want.nxt)
        assert g.dropped == want.dropped
    assert (push._direct_scratch(t._arena.high_water) == -1).all()


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE)
@given(g=groups(), now=st.integers(0, 2**31 - 1), version=st.integers(0, 2**31 - 1))
def test_step_groups_is_update_groups_plus_the_metadata_of_its_rows(build, opt, g, now,
                                                                    version) -> None:
    """The push's fused write: weights and state as ``update_groups``, ``last_seen`` and
    ``stamp`` set on the stepped rows only."""
    _, rows, first, nxt, grads = g
    rng = np.random.default_rng(now)
    w = rng.uniform(-1, 1, (40, DIM)).astype(np.float32)
    s = rng.uniform(0, 1, (40, opt.state_width(DIM))).astype(np.float32)
    last_seen = rng.integers(0, 100, 40).astype(np.int32)
    stamp = rng.integers(0, 100, 40).astype(np.int32)
    w2, s2, last2, stamp2 = w.copy(), s.copy(), last_seen.copy(), stamp.copy()
    opt.step_groups(w, s, rows, grads, first, nxt, last_seen, stamp, now, version)
    opt.update_groups(w2, s2, rows, grads, first, nxt)
    last2[rows], stamp2[rows] = now, version
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(last_seen, last2)
    np.testing.assert_array_equal(stamp, stamp2)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE)
@given(batch=batches, bad=st.lists(st.tuples(st.integers(0, 10**6),
                                             st.sampled_from([np.nan, np.inf, -np.inf])),
                                   max_size=8))
def test_group_counts_every_non_finite_value(build, batch, bad) -> None:
    keys, grads = batch
    grads = grads.copy()
    flat = grads.reshape(-1)
    for at, v in bad:
        flat[at % flat.size] = v
    t = _table(kraken.SGD(), 0)
    skeys, srows, mask = t._index.slots()
    g = push.group(skeys, srows, mask, keys, grads)
    assert g.nonfinite == int(np.count_nonzero(~np.isfinite(grads)))
