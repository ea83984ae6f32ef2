"""The log source's I/O-free parts (no server): the merge order across keys, one key's
gap counting, outage bookkeeping and positions, against simple references."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.data._batchstate import empty_batch
from kraken.data._logentries import EntryBlock
from kraken.data._logkeys import KeyState
from kraken.data._logmerge import cutoff, merge_runs
from kraken.data._logposition import COUNTERS, Ready, position_state, read_position
from kraken.data._logserver import Outage
from kraken.errors import ConfigError, InputError
from tests.log.helpers import config

SORTED = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12).map(sorted)


@given(SORTED, SORTED)
def test_merge_runs_order_by_millisecond_then_event_time_impressions_first(imp, act):
    runs = merge_runs(np.array([m for m, _ in imp], np.int64), np.array([t for _, t in imp]),
                      np.array([m for m, _ in act], np.int64), np.array([t for _, t in act]))
    got = [(kind, i) for kind, a, b in runs for i in range(a, b)]
    ref = sorted([(m, t, 0, i) for i, (m, t) in enumerate(imp)]
                 + [(m, t, 1, i) for i, (m, t) in enumerate(act)])
    assert got == [(kind, i) for _, _, kind, i in ref]
    assert all(k1 != k2 for (k1, _, _), (k2, _, _) in zip(runs, runs[1:], strict=False))


def _block(ms: list[int]) -> EntryBlock:
    return EntryBlock.from_entries([[f"{m}-0", ["rid", "1"]] for m in ms])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 20), st.integers(1, 20), st.integers(0, 25))
def test_a_key_counts_entries_trimmed_before_its_read_and_feeds_before_the_cutoff(
        trimmed, n, cut):
    """Entries ``1 .. trimmed + n`` were added (entry i has id ``i-0``); the first
    ``trimmed`` were trimmed before the read, which delivers the rest."""
    k = KeyState("kraken:impressions:0")
    ms = list(range(trimmed + 1, trimmed + n + 1))
    assert k.deliver(n, trimmed + n, f"{ms[0]}-0", f"{ms[-1]}-0", _block(ms), n + 1) == n
    assert not k.more and k.buffered == n and k.dpos == (ms[-1], 0)
    assert cutoff([k]) is None  # it holds no more: everything may be fed
    blocks, lost = k.take(cut)
    fed = [m for m in ms if m < cut]
    assert [int(i.split("-")[0]) for b in blocks for i in b.ids] == fed
    assert lost == (trimmed if fed else 0)
    if fed:
        assert k.pos == (fed[-1], 0) and k.read == fed[-1]
    blocks, lost = k.take(None)
    assert k.pos == (ms[-1], 0) and k.read == trimmed + n and k.buffered == 0
    assert lost == (0 if fed else trimmed)


def test_a_key_that_may_hold_more_bounds_the_cutoff():
    a, b = KeyState("a"), KeyState("b")
    a.deliver(3, 3, "1-0", "3-0", _block([1, 2, 3]), 3)  # asked for 3: may hold more
    b.deliver(2, 2, "5-0", "6-0", _block([5, 6]), 2)
    assert a.more and b.more and cutoff([a, b]) == 3
    b.more = False
    assert cutoff([a, b]) == 3 and cutoff([b]) is None


def test_outages_back_off_doubling_to_the_cap_and_are_reported_once(caplog):
    o = Outage(config("redis://127.0.0.1:1", backoff_s=0.05, max_backoff_s=0.3))
    assert not o.up() and o.seconds == 0.0
    with caplog.at_level(logging.WARNING, logger="kraken.data"):
        waits = []
        for _ in range(5):
            o.down(ConnectionError("refused"))
            waits.append(o.backoff())
        assert waits == [0.05, 0.1, 0.2, 0.3, 0.3]
        assert o.since is not None and o.up() and not o.up()
    text = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in t for t in text) == 1
    assert sum("back after" in t and "(5 attempts)" in t for t in text) == 1


def test_a_changed_run_id_is_a_restart_unless_an_outage_was_seen():
    o = Outage(config("redis://127.0.0.1:1"))
    assert not o.restarted("a") and not o.restarted("a")
    assert o.restarted("b") and not o.restarted("b")
    o.down(ConnectionError("reset"))
    assert not o.restarted("c")  # counted as the outage, not again as a restart


def test_a_position_reads_back_and_refuses_another_layout():
    c = config("redis://127.0.0.1:1", partitions=2)
    keys = [KeyState(n) for n in c.keys]
    for i, k in enumerate(keys):
        k.pos, k.read = (1000 + i, i), 7 * i
    counters = {name: i + 1 for i, name in enumerate(COUNTERS)}
    schema = c.schema.schema
    ready = [Ready(empty_batch(schema), np.zeros(0, np.uint64), np.zeros(0, np.int8))]
    state = position_state(keys, [2, 0, 1], counters, {"x": np.arange(3)}, ready, schema)
    pos = read_position(state, len(keys), [2, 0, 1], schema)
    assert pos.ids == [k.pos for k in keys] and pos.reads == [k.read for k in keys]
    assert pos.counters == counters and list(pos.join) == ["x"]
    assert np.array_equal(pos.join["x"], np.arange(3)) and len(pos.ready.batch) == 0
    with pytest.raises(ConfigError, match=r"taken with \(partitions, rank, world\) = "
                                          r"\(2, 0, 1\), this stream reads \(4, 0, 1\)"):
        read_position(state, len(keys), [4, 0, 1], schema)
    with pytest.raises(InputError, match="not a position of this log stream"):
        read_position({k: v for k, v in state.items() if k != "log.read"}, len(keys),
                      [2, 0, 1], schema)
