"""Joiner: against a dict-based reference, exact state round trips, named cases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.arrayfile import decode_arrays, encode_arrays
from kraken.data.base import Batch, Jagged
from kraken.data.join import COUNTERS, JoinConfig, Joiner, SampleKind
from kraken.errors import CheckpointMismatchError, ConfigError, DTypeError, InputError

P, N, POS, C = "pending", "negative", "positive", "clicked"  # C: waits for its score


class RefJoiner:
    """The joiner's semantics (kraken/data/join.py docstring), one event at a time."""

    def __init__(self, c: JoinConfig) -> None:
        self.c = c
        self.rows: dict[int, dict] = {}  # insertion order = arrival order
        self.wm: int | None = None
        self.out: list[tuple[int, int, int, float]] = []  # rid, kind, ts, prior
        self.n = dict.fromkeys(COUNTERS, 0)

    def add_impressions(self, rid: list[int], ts: list[int]) -> None:
        if not rid:
            return
        seen: set[int] = set()
        for r, t in zip(rid, ts, strict=True):
            self.n["impressions"] += 1
            if r in seen or r in self.rows:
                self.n["duplicate_impressions"] += 1
                continue
            seen.add(r)
            self.rows[r] = {"ts": t, "st": P, "prior": math.nan}
        self.advance(max(ts))
        pend = [r for r, v in self.rows.items() if v["st"] in (P, C)]
        over = len(pend) - self.c.max_pending
        for r in pend[:max(over, 0)]:
            del self.rows[r]
            self.n["dropped_over_budget"] += 1
        self.forget()

    def _decide(self, r: int, kind: int) -> None:
        v = self.rows[r]
        self.out.append((r, kind, v["ts"], v["prior"]))
        v["st"] = N if kind == SampleKind.NEGATIVE else POS

    def advance(self, t: int) -> None:
        self.wm = t if self.wm is None else max(self.wm, t)
        for r, v in list(self.rows.items()):  # unscored clicks: positives at window end
            if v["st"] == C and v["ts"] + self.c.window_s <= self.wm:
                self._decide(r, SampleKind.POSITIVE)
                self.n["positives"] += 1
        for r, v in list(self.rows.items()):
            if v["st"] == P and v["ts"] + self.c.window_s <= self.wm:
                self._decide(r, SampleKind.NEGATIVE)
                self.n["negatives"] += 1

    def forget(self) -> None:
        if self.wm is None:
            return
        horizon = self.wm - self.c.window_s - self.c.correction_s
        dec = [r for r, v in self.rows.items() if v["st"] not in (P, C)]
        old = [r for r in dec if self.rows[r]["ts"] <= horizon]
        keep = [r for r in dec if self.rows[r]["ts"] > horizon]
        gone = old + keep[:max(len(keep) - self.c.max_recent, 0)]
        for r in gone:
            del self.rows[r]
        self.n["forgotten"] += len(gone)

    def add_actions(self, rid: list[int], ts: list[int], kind: list[int]) -> None:
        if not rid:
            return
        self.n["actions"] += len(rid)
        labels = [self.c.action_types[k] in self.c.label_actions for k in kind]
        known = [r in self.rows for r in rid]
        todo = []
        for r, t, is_label, k in zip(rid, ts, labels, known, strict=True):
            if not k:
                self.n["orphan_actions"] += 1
            elif not is_label:
                self.n["other_actions"] += 1
            else:
                v = self.rows[r]
                if v["st"] == P and t - v["ts"] < self.c.window_s:
                    if self.c.wait_for_score and math.isnan(v["prior"]):
                        v["st"] = C
                        continue
                    self._decide(r, SampleKind.POSITIVE)
                    self.n["positives"] += 1
                else:
                    todo.append(r)
        self.advance(max(ts))
        for r in todo:
            if self.rows[r]["st"] == N:
                self._decide(r, SampleKind.CORRECTION)
                self.n["corrections"] += 1
            else:
                self.n["duplicate_actions"] += 1
        self.forget()

    def scored(self, rid: list[int], prob: list[float]) -> None:
        for r, p in zip(rid, prob, strict=True):
            if r in self.rows:
                self.rows[r]["prior"] = p
                self.n["scored"] += 1
        for r in rid:  # a waiting click goes out with its (last given) score
            if r in self.rows and self.rows[r]["st"] == C:
                self._decide(r, SampleKind.POSITIVE)
                self.n["positives"] += 1

    def emit(self) -> list[tuple[int, int, int, float]]:
        out, self.out = self.out, []
        return out

    def counters(self) -> dict[str, int]:
        pend = sum(v["st"] in (P, C) for v in self.rows.values())
        return {**self.n, "pending": pend, "recent": len(self.rows) - pend}


def features(rid: np.ndarray, ts: np.ndarray) -> Batch:
    """Features that name their impression: keys = [rid, ts], dense = [rid % 7], a
    multi-valued field with rid % 3 copies of rid."""
    n = rid.shape[0]
    lengths = (rid % np.uint64(3)).astype(np.int64)
    return Batch(keys=np.stack([rid.view(np.int64), ts], axis=1),
                 dense=(rid % np.uint64(7)).astype(np.float32)[:, None],
                 label=np.zeros(n, np.float32), event_time=ts,
                 jagged={"g": Jagged.from_lengths(np.repeat(rid.view(np.int64), lengths),
                                                  lengths)})


def check_emitted(batch: Batch | None, j: Joiner) -> list[tuple[int, int, int, float]]:
    """The emitted samples as (rid, kind, ts, prior), after checking their features."""
    if batch is None:
        assert j.emitted_rid.shape == (0,)
        return []
    rid, kind = j.emitted_rid, j.emitted_kind
    assert batch.keys[:, 0].view(np.uint64).tolist() == rid.tolist()
    np.testing.assert_array_equal(batch.keys[:, 1], batch.event_time)
    np.testing.assert_array_equal(batch.dense[:, 0], (rid % np.uint64(7)).astype(np.float32))
    g = batch.jagged["g"]
    np.testing.assert_array_equal(g.lengths, (rid % np.uint64(3)).astype(np.int64))
    np.testing.assert_array_equal(g.values, np.repeat(rid.view(np.int64), g.lengths))
    np.testing.assert_array_equal(batch.label, (kind != SampleKind.NEGATIVE).astype(np.float32))
    assert batch.prior is not None and batch.prior.dtype == np.float32
    return [(int(r), int(k), int(t), float(p)) for r, k, t, p in
            zip(rid, kind, batch.event_time, batch.prior, strict=True)]


def same(a: list[tuple[int, int, int, float]], b: list[tuple[int, int, int, float]]) -> bool:
    return len(a) == len(b) and all(
        x[:3] == y[:3] and (x[3] == y[3] or (math.isnan(x[3]) and math.isnan(y[3])))
        for x, y in zip(a, b, strict=True))


def round_trip(j: Joiner) -> Joiner:
    """A new joiner loaded from ``j``'s state, carried through the array file format."""
    meta, arrays = decode_arrays(encode_arrays({}, j.state()))
    fresh = Joiner(j.config)
    fresh.load_state(arrays)
    return fresh


RIDS = [*range(10), 2**63 + 5, 2**64 - 1]
rid_s = st.sampled_from(RIDS)


@st.composite
def scenario_s(draw: st.DrawFn) -> tuple[JoinConfig, list[tuple]]:
    """A config and operations on a clock that moves 0..6 s per op. Impressions lag the
    clock by up to 14 s; an action either follows an earlier impression after a delay of
    0..(2 W + C) s (often exactly W, the window's edge) or names any rid."""
    w = draw(st.integers(1, 12))
    config = JoinConfig(window_s=w, max_pending=draw(st.integers(1, 8)),
                        label_actions=draw(st.sampled_from([("click",), ("click", "buy")])),
                        action_types=("click", "view", "buy"),
                        correction_s=draw(st.integers(0, 12)), max_recent=draw(st.integers(0, 8)),
                        wait_for_score=draw(st.booleans()))
    delay_s = st.one_of(st.just(w), st.just(w - 1), st.integers(0, 2 * w + config.correction_s))
    ops: list[tuple] = []
    shown: list[tuple[int, int]] = []
    clock = 100
    for _ in range(draw(st.integers(0, 30))):
        clock += draw(st.integers(0, 6))
        what = draw(st.sampled_from(["imp", "imp", "act", "act", "act", "adv", "score",
                                     "emit", "state"]))
        if what == "imp":
            batch = [(draw(rid_s), clock - draw(st.integers(-2, 14)))
                     for _ in range(draw(st.integers(0, 6)))]
            shown += batch
            ops.append(("imp", batch))
        elif what == "act":
            acts = []
            for _ in range(draw(st.integers(0, 6))):
                kind = draw(st.integers(0, 2))
                if shown and draw(st.booleans()):
                    r, t = draw(st.sampled_from(shown[-12:]))
                    acts.append((r, t + draw(delay_s), kind))
                else:
                    acts.append((draw(rid_s), clock - draw(st.integers(-2, 14)), kind))
            ops.append(("act", acts))
        elif what == "adv":
            ops.append(("adv", clock))
        elif what == "score":
            ops.append(("score", draw(st.lists(st.tuples(rid_s, st.floats(0, 1, width=32)),
                                               max_size=4))))
        else:
            ops.append((what,))
    return config, ops


def u64(xs: list[int]) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenario_s())
def test_joiner_matches_the_reference_with_and_without_state_round_trips(scenario) -> None:
    config, ops = scenario
    ref, j = RefJoiner(config), Joiner(config)
    for op in ops:
        if op[0] == "imp":
            rid, ts = u64([r for r, _ in op[1]]), np.array([t for _, t in op[1]], np.int64)
            j.add_impressions(rid, ts, features(rid, ts))
            ref.add_impressions(rid.tolist(), ts.tolist())
        elif op[0] == "act":
            rid = u64([a[0] for a in op[1]])
            ts = np.array([a[1] for a in op[1]], np.int64)
            kind = np.array([a[2] for a in op[1]], np.int8)
            j.add_actions(rid, ts, kind)
            ref.add_actions(rid.tolist(), ts.tolist(), kind.tolist())
        elif op[0] == "adv":
            j.advance(op[1])
            ref.advance(op[1])
            ref.forget()
        elif op[0] == "score":
            rid, p = u64([r for r, _ in op[1]]), np.array([p for _, p in op[1]], np.float32)
            j.scored(rid, p)
            ref.scored(rid.tolist(), p.tolist())
        elif op[0] == "emit":
            got, want = check_emitted(j.emit(), j), ref.emit()
            assert same(got, want), (got, want)
        else:
            j = round_trip(j)
        assert j.counters == ref.counters()
        assert j.watermark == ref.wm
    assert same(check_emitted(j.emit(), j), ref.emit())


def imp(j: Joiner, rid: list[int], ts: list[int]) -> None:
    r, t = u64(rid), np.array(ts, np.int64)
    j.add_impressions(r, t, features(r, t))


def act(j: Joiner, rid: list[int], ts: list[int], kind: int = 0) -> None:
    j.add_actions(u64(rid), np.array(ts, np.int64), np.full(len(rid), kind, np.int8))


def emitted(j: Joiner) -> list[tuple[int, int]]:
    j.emit()
    return list(zip(j.emitted_rid.tolist(), j.emitted_kind.tolist(), strict=True))


def test_click_in_window_is_a_positive_at_once_and_silence_a_negative_at_expiry() -> None:
    j = Joiner(JoinConfig(window_s=60))
    imp(j, [1, 2], [1000, 1000])
    j.scored(u64([1, 2]), np.array([0.25, 0.75], np.float32))
    act(j, [1], [1030])
    batch = j.emit()
    assert batch is not None and batch.label.tolist() == [1.0]
    assert batch.prior.tolist() == [0.25] and batch.event_time.tolist() == [1000]
    assert emitted(j) == []
    imp(j, [3], [1059])  # watermark 1059: rid 2 still waits (1000 + 60 > 1059)
    assert emitted(j) == []
    imp(j, [4], [1060])
    batch = j.emit()
    assert j.emitted_rid.tolist() == [2] and batch.label.tolist() == [0.0]
    assert batch.prior.tolist() == [0.75]
    assert j.counters["positives"] == 1 and j.counters["negatives"] == 1
    assert j.counters["pending"] == 2


def test_with_wait_for_score_a_click_before_the_score_waits_for_it() -> None:
    j = Joiner(JoinConfig(window_s=60, wait_for_score=True))
    imp(j, [1, 2, 3], [1000, 1000, 1000])
    j.scored(u64([3]), np.array([0.5], np.float32))
    act(j, [1, 2, 3], [1010, 1010, 1010])  # 1 and 2 clicked before any score of theirs
    batch = j.emit()
    assert j.emitted_rid.tolist() == [3] and batch.prior.tolist() == [0.5]
    assert j.counters["pending"] == 2 and j.counters["positives"] == 1
    act(j, [1], [1011])  # a second click of a waiting row: a duplicate
    j = round_trip(j)  # the wait survives a checkpoint
    j.scored(u64([1]), np.array([0.25], np.float32))
    batch = j.emit()
    assert emitted_of(j, batch) == [(1, SampleKind.POSITIVE, 0.25)]
    j.advance(1060)  # rid 2 never scored: its positive goes out when its window ends
    batch = j.emit()
    assert j.emitted_rid.tolist() == [2] and batch.label.tolist() == [1.0]
    assert np.isnan(batch.prior).all()
    c = j.counters
    assert (c["positives"], c["negatives"], c["duplicate_actions"], c["pending"]) == (3, 0, 1, 0)


def emitted_of(j: Joiner, batch: Batch | None) -> list[tuple[int, int, float]]:
    assert batch is not None
    return list(zip(j.emitted_rid.tolist(), j.emitted_kind.tolist(), batch.prior.tolist(),
                    strict=True))


def test_late_click_is_trained_again_as_a_correction_and_counted() -> None:
    j = Joiner(JoinConfig(window_s=60, correction_s=120))
    imp(j, [7], [1000])
    j.advance(1100)
    assert emitted(j) == [(7, SampleKind.NEGATIVE)]
    act(j, [7, 7], [1150, 1151])  # the second click is a duplicate
    assert emitted(j) == [(7, SampleKind.CORRECTION)]
    act(j, [7], [1160])  # so is a later one: no second correction
    assert emitted(j) == []
    c = j.counters
    assert (c["corrections"], c["duplicate_actions"], c["orphan_actions"]) == (1, 2, 0)
    j.advance(1000 + 60 + 120)  # past the correction horizon: forgotten
    act(j, [7], [1181])
    assert emitted(j) == [] and j.counters["orphan_actions"] == 1
    assert j.counters["forgotten"] == 1 and j.counters["recent"] == 0


def test_a_click_after_the_window_read_before_the_expiry_is_negative_then_correction() -> None:
    j = Joiner(JoinConfig(window_s=60))
    imp(j, [5], [1000])
    act(j, [5], [1060])  # event time says: outside the window (1000 + 60)
    assert emitted(j) == [(5, SampleKind.NEGATIVE), (5, SampleKind.CORRECTION)]


def test_actions_for_unknown_requests_are_orphans_and_other_types_change_nothing() -> None:
    j = Joiner(JoinConfig(action_types=("click", "view"), label_actions=("click",)))
    imp(j, [1], [1000])
    act(j, [99, 98], [1001, 1001])
    act(j, [1], [1002], kind=1)
    assert emitted(j) == []
    c = j.counters
    assert (c["orphan_actions"], c["other_actions"], c["pending"]) == (2, 1, 1)


def test_budget_drops_the_oldest_pending_impressions_first_and_counts_them() -> None:
    j = Joiner(JoinConfig(window_s=1000, max_pending=3))
    imp(j, [1, 2], [1000, 1000])
    imp(j, [3, 4, 5], [1001, 1001, 1001])
    c = j.counters
    assert (c["pending"], c["dropped_over_budget"]) == (3, 2)
    act(j, [1, 2, 3], [1002] * 3)
    assert emitted(j) == [(3, SampleKind.POSITIVE)]
    assert j.counters["orphan_actions"] == 2


def test_duplicate_impressions_are_counted_and_the_first_is_kept() -> None:
    j = Joiner(JoinConfig(window_s=10))
    imp(j, [1, 1], [1000, 1005])
    imp(j, [1], [1007])
    j.advance(1010)
    batch = j.emit()
    assert batch.event_time.tolist() == [1000]
    assert j.counters["duplicate_impressions"] == 2


def test_many_rows_compact_and_survive_a_round_trip() -> None:
    """Enough traffic to compact the store several times; a round trip in the middle."""
    rng = np.random.default_rng(0)
    cfg = JoinConfig(window_s=50, max_pending=3000, max_recent=2000)
    a, b = Joiner(cfg), Joiner(cfg)
    outs: tuple[list, list] = ([], [])
    for step in range(40):
        rid = (np.arange(500, dtype=np.uint64) + np.uint64(500 * step)) * np.uint64(2654435761)
        ts = np.full(500, 1000 + step * 10, np.int64)
        clicked = rid[rng.random(500) < 0.3]
        lag = rng.integers(0, 80, clicked.shape[0]).astype(np.int64)
        for j, out in zip((a, b), outs, strict=True):
            j.add_impressions(rid, ts, features(rid, ts))
            j.add_actions(clicked, ts[:clicked.shape[0]] + lag, np.zeros_like(lag, np.int8))
            out.append(check_emitted(j.emit(), j))
        if step == 17:
            b = round_trip(b)
    assert all(same(x, y) for x, y in zip(*outs, strict=True))
    assert a.counters == b.counters
    assert a.counters["corrections"] > 0 and a.counters["forgotten"] > 0
    assert a._store is not None and a._store.n < 20_000  # compacted, not grown forever


def test_state_is_plain_numeric_arrays_and_bad_state_changes_nothing() -> None:
    j = Joiner(JoinConfig(window_s=60))
    imp(j, [1, 2], [1000, 1001])
    st_ = j.state()
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in st_.values())
    bad = dict(st_)
    bad["rows.ts"] = bad["rows.ts"][:1]
    before = j.state()
    with pytest.raises(CheckpointMismatchError, match="rows.ts"):
        j.load_state(bad)
    after = j.state()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)
    with pytest.raises(CheckpointMismatchError):
        Joiner().load_state({"version": np.array([1], np.int64)})


def test_bad_inputs_raise_kraken_errors_and_change_nothing() -> None:
    j = Joiner()
    r, t = u64([1]), np.array([1000], np.int64)
    with pytest.raises(DTypeError):
        j.add_impressions(r.astype(np.int64), t, features(r, t))
    with pytest.raises(InputError, match="kind"):
        j.add_actions(r, t, np.array([3], np.int8))
    with pytest.raises(InputError, match="rows"):
        j.add_impressions(u64([1, 2]), np.array([1, 2], np.int64), features(r, t))
    assert j.counters["impressions"] == 0 and j.counters["actions"] == 0


@pytest.mark.parametrize("kw, match", [
    ({"window_s": 0}, "window_s"),
    ({"label_actions": ("buy",)}, "label_actions"),
    ({"action_types": ()}, "action_types"),
    ({"max_pending": 1.5}, "max_pending"),
])
def test_config_errors_name_the_key(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        JoinConfig(**kw)


def test_config_derives_correction_horizon_and_recent_budget() -> None:
    c = JoinConfig(window_s=30, max_pending=10, label_actions=["click"])
    assert (c.correction_s, c.max_recent, c.label_actions) == (30, 10, ("click",))
    assert dataclasses.replace(c, correction_s=5).correction_s == 5
