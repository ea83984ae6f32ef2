"""Streaming metrics against direct definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.train.metrics import AUC, Calibration, LogLoss, MetricSet, exact_auc


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y > 0.5], p[y <= 0.5]
    if not len(pos) or not len(neg):
        return math.nan
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


samples = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 50)), min_size=1, max_size=60)


@given(samples)
def test_exact_auc_matches_pairwise_definition(data) -> None:
    y = np.array([a for a, _ in data], dtype=np.float32)
    p = np.array([b / 50 for _, b in data], dtype=np.float32)
    want = brute_auc(y, p)
    got = exact_auc(y, p)
    assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


@given(samples, st.integers(1, 4))
def test_histogram_auc_matches_exact_when_bins_separate_values(data, chunks) -> None:
    y = np.array([a for a, _ in data], dtype=np.float32)
    p = np.array([b / 50 for _, b in data], dtype=np.float32) * 0.999
    m = AUC(bins=1 << 12)
    for idx in np.array_split(np.arange(len(y)), chunks):
        m.update(y[idx], p[idx])
    want = brute_auc(y, p)
    assert (math.isnan(want) and math.isnan(m.get())) or m.get() == pytest.approx(want)


def test_histogram_auc_is_close_on_continuous_scores() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000).astype(np.float32)
    y = (rng.random(200_000) < p).astype(np.float32)
    m = AUC()
    m.update(y, p)
    assert abs(m.get() - exact_auc(y, p)) < 1e-5


def test_logloss_and_calibration() -> None:
    y = np.array([1, 0, 1, 0], dtype=np.float32)
    p = np.array([0.9, 0.2, 0.6, 0.1], dtype=np.float32)
    ll, cal = LogLoss(), Calibration()
    ll.update(y[:2], p[:2])
    ll.update(y[2:], p[2:])
    cal.update(y, p)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert ll.get() == pytest.approx(want, rel=1e-6)
    assert cal.get() == pytest.approx(p.sum() / y.sum(), rel=1e-6)


def test_metric_set_state_round_trip() -> None:
    rng = np.random.default_rng(1)
    a, b = MetricSet(auc_bins=256), MetricSet(auc_bins=256)
    a.update((rng.random(500) < 0.3).astype(np.float32), rng.random(500).astype(np.float32))
    b.load_state(a.state())
    assert a.get() == b.get()
    a.reset()
    assert a.get()["samples"] == 0 and math.isnan(a.get()["auc"])
