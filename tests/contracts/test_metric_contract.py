"""The contract every streaming metric keeps (kraken.train.metrics.base.Metric):
merge of halves equals one pass, state round-trips, reset forgets, questions change nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.errors import ConfigError
from kraken.train.metrics import AUC, Calibration, LogLoss, Metric, MetricSet, exact_auc

FACTORIES: dict[str, Callable[[], Any]] = {
    "auc-64": lambda: AUC(bins=64),
    "auc": AUC,
    "logloss": LogLoss,
    "calibration": Calibration,
    "metric-set": lambda: MetricSet(auc_bins=256),
}

observations = st.lists(
    st.tuples(st.integers(0, 1), st.floats(0.0, 1.0, allow_nan=False, width=32)),
    min_size=0, max_size=80)


def _arrays(data: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([a for a, _ in data], dtype=np.float32)
    p = np.array([b for _, b in data], dtype=np.float32)
    return y, p


def assert_same_state(a: Any, b: Any, *, exact: bool = True) -> None:
    sa, sb = a.state(), b.state()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        if exact or sa[k].dtype.kind in "iu":
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
        else:
            np.testing.assert_allclose(sa[k], sb[k], rtol=1e-12, atol=1e-12, err_msg=k)


def _same_get(a: Any, b: Any) -> None:
    ga, gb = a.get(), b.get()
    if isinstance(ga, dict):
        assert ga.keys() == gb.keys()
        for k in ga:
            assert (math.isnan(ga[k]) and math.isnan(gb[k])) or ga[k] == pytest.approx(gb[k])
    else:
        assert (math.isnan(ga) and math.isnan(gb)) or ga == pytest.approx(gb)


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=40, deadline=None)
@given(data=observations, cut=st.floats(0.0, 1.0))
def test_merge_of_halves_equals_one_pass(name: str, data, cut: float) -> None:
    make = FACTORIES[name]
    y, p = _arrays(data)
    k = int(cut * len(y))
    whole, left, right = make(), make(), make()
    whole.update(y, p)
    left.update(y[:k], p[:k])
    right.update(y[k:], p[k:])
    right_before = right.state()
    left.merge(right)
    assert_same_state(left, whole, exact=False)
    _same_get(left, whole)
    for key, v in right.state().items():  # the merged-in metric is unchanged
        np.testing.assert_array_equal(v, right_before[key])


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=25, deadline=None)
@given(data=observations)
def test_state_round_trips_and_questions_change_nothing(name: str, data) -> None:
    make = FACTORIES[name]
    y, p = _arrays(data)
    m = make()
    m.update(y, p)
    before = m.state()
    m.get()
    assert_same_state(m, _loaded(make, before))  # get() changed nothing
    copy = _loaded(make, m.state())
    assert_same_state(copy, m)
    _same_get(copy, m)
    for v in m.state().values():  # state() hands out copies
        v[...] = 7
    assert_same_state(m, copy)


def _loaded(make: Callable[[], Any], state: dict[str, np.ndarray]) -> Any:
    m = make()
    m.load_state(state)
    return m


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=15, deadline=None)
@given(data=observations)
def test_reset_forgets_everything(name: str, data) -> None:
    make = FACTORIES[name]
    y, p = _arrays(data)
    m = make()
    m.update(y, p)
    m.reset()
    assert_same_state(m, make())
    m.update(y, p)
    fresh = make()
    fresh.update(y, p)
    assert_same_state(m, fresh)


@pytest.mark.parametrize("name", FACTORIES)
def test_merging_a_different_kind_is_refused(name: str) -> None:
    m = FACTORIES[name]()
    other = LogLoss() if not isinstance(m, LogLoss) else Calibration()
    with pytest.raises(ConfigError, match="cannot merge"):
        m.merge(other)


def test_every_metric_is_a_metric() -> None:
    for name, make in FACTORIES.items():
        m = make()
        if not isinstance(m, MetricSet):
            assert isinstance(m, Metric), name
            assert isinstance(m.bigger_is_better, bool)


def test_auc_with_different_bins_does_not_merge() -> None:
    with pytest.raises(ConfigError, match="different bins: 64 and 128"):
        AUC(bins=64).merge(AUC(bins=128))


@settings(max_examples=60, deadline=None)
@given(data=observations, bins=st.sampled_from([2, 8, 64, 1 << 12]))
def test_histogram_auc_is_within_its_stated_bound_of_the_exact_auc(data, bins: int) -> None:
    y, p = _arrays(data)
    m = AUC(bins=bins)
    m.update(y, p)
    exact = exact_auc(y, p)
    if math.isnan(exact):
        assert math.isnan(m.get()) and math.isnan(m.tie_bound())
    else:
        assert abs(m.get() - exact) <= m.tie_bound() + 1e-12


def test_the_auc_bound_is_tight_enough_to_mean_something() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000).astype(np.float32)
    y = (rng.random(50_000) < p).astype(np.float32)
    m = AUC()
    m.update(y, p)
    assert m.tie_bound() < 1e-4
    assert abs(m.get() - exact_auc(y, p)) <= m.tie_bound()
