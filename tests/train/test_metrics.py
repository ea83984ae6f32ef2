"""Streaming metrics against direct definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.errors import InputError
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


def numpy_histogram_auc(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """The histograms and value by whole-array numpy (the definition the kernels follow)."""
    with np.errstate(invalid="ignore"):  # NaN scores: bin 0, as the kernel does
        idx = np.clip((p.astype(np.float64) * bins).astype(np.int64), 0, bins - 1)
    pos = np.bincount(idx[y > 0.5], minlength=bins)
    neg = np.bincount(idx[~(y > 0.5)], minlength=bins)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    value = math.nan
    if n_pos and n_neg:
        wins = (pos * (np.cumsum(neg) - neg)).sum() + 0.5 * (pos * neg).sum()
        value = float(wins / (n_pos * n_neg))
    return pos, neg, value


edge_scores = st.sampled_from([0.0, 1e-9, 0.5, 1 - 1e-7, 1.0, 1.5, -0.25, math.nan])


@given(st.lists(st.tuples(st.integers(0, 1), st.one_of(st.floats(0, 1, width=32), edge_scores)),
                min_size=1, max_size=80),
       st.sampled_from([1, 7, 256]), st.integers(1, 3))
def test_histogram_auc_kernels_match_numpy_definition(data, bins, chunks) -> None:
    y = np.array([a for a, _ in data], dtype=np.float32)
    p = np.array([b for _, b in data], dtype=np.float32)
    m = AUC(bins=bins)
    for idx in np.array_split(np.arange(len(y)), chunks):
        m.update(y[idx], p[idx])
    pos, neg, want = numpy_histogram_auc(y, p, bins)
    assert np.array_equal(m.pos, pos) and np.array_equal(m.neg, neg)
    got = m.get()
    assert (math.isnan(want) and math.isnan(got)) or got == want


def test_auc_update_refuses_mismatched_lengths() -> None:
    with pytest.raises(InputError, match="one length"):
        AUC(bins=8).update(np.zeros(3, np.float32), np.zeros(4, np.float32))
