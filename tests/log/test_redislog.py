"""The log source against a real redis-server: joined samples, the CSV source's IDs,
positions, acknowledgement after commit, claiming, gaps, malformed entries, lag."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import redis

from kraken.data import TabularStream
from kraken.data.logconfig import LogConfig
from kraken.data.redislog import RedisLogStream
from tests.log.helpers import (
    SCHEMA,
    expected,
    flush,
    impression,
    open_log,
    rids_labels,
    take,
    write,
)


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    c.close()


def test_samples_are_joined_and_featurized_as_the_csv_source(redis_server, client, tmp_path):
    rids = write(client, 1, 40)
    flush(client, 10_000)
    stream = open_log(redis_server.url)
    got = take(stream.batches(16), 40)
    assert sorted(rids_labels(got)) == expected(rids)
    assert max(len(b) for b in got) <= 16
    # the same raw values through the CSV source give the same IDs and dense values
    csv = tmp_path / "t.csv"
    cols = ["uid", "user", "item", "tags", "price"]
    rows = [impression(r, 1000 + r) for r in rids]
    csv.write_text("label," + ",".join(cols) + "\n" + "".join(
        f"0,{','.join(row[c] for c in cols)}\n" for row in rows))
    ref = next(TabularStream(csv, {"label": "label", **SCHEMA}).batches(100))
    order = np.argsort(np.concatenate([b.keys[:, 0] for b in got]))
    keys = np.concatenate([b.keys for b in got])[order]
    dense = np.concatenate([b.dense for b in got])[order]
    tags = np.concatenate([b.jagged["tags"].lengths for b in got])[order]
    assert np.array_equal(keys, ref.keys)
    assert np.array_equal(dense, ref.dense)
    assert np.array_equal(tags, ref.jagged["tags"].lengths)
    assert stream.features.schema == stream.schema


def test_fresh_impressions_come_once_and_their_scores_become_priors(redis_server, client):
    write(client, 1, 12)
    flush(client, 10_000)
    stream = open_log(redis_server.url)
    it = stream.batches(64)
    fresh_rids, samples = [], []
    while len(samples) < 12:
        b = next(it)
        if b.fresh is not None:
            fresh_rids += [int(k) & ((1 << 56) - 1) for k in b.fresh.keys[:, 0]]
            stream.scored(b.fresh, np.full(len(b.fresh), 0.25, np.float32))
        samples += [b] if len(b) else []
        if sum(len(s) for s in samples) >= 12:
            break
    assert sorted(fresh_rids) == list(range(1, 13))
    with pytest.raises(Exception, match="not a pending"):
        stream.scored(b.fresh if b.fresh is not None else b, np.zeros(len(b), np.float32))


def test_position_resumes_exactly_and_acks_only_after_commit(redis_server, client):
    write(client, 1, 60)
    flush(client, 10_000)
    a = open_log(redis_server.url, read_count=8)
    it = a.batches(5)
    first = take(it, 20)
    state = a.position()
    assert client.xpending("kraken:impressions:0", "kraken")["pending"] > 0
    # a second trainer resumes from the state: the rest, each sample once
    b = open_log(redis_server.url, consumer="trainer-b", read_count=8)
    b.seek(state)
    rest = take(b.batches(7), 60 - len(rids_labels(first)))
    done = rids_labels(first) + rids_labels(rest)
    assert sorted(done) == expected(list(range(1, 61)))
    # nothing acknowledged before the commit; the commit acks up to the state only
    pend_before = client.xpending("kraken:impressions:0", "kraken")["pending"]
    b.commit(state)
    pend_after = client.xpending("kraken:impressions:0", "kraken")
    last_fed = "-".join(str(int(x)) for x in state["log.id"][0])
    assert pend_after["pending"] < pend_before
    acked = client.xrange("kraken:impressions:0", max=last_fed)
    left = client.xpending_range("kraken:impressions:0", "kraken", min="-", max=last_fed,
                                 count=1000)
    assert acked and not left
    # the dead consumer's entries were claimed by b when it started
    consumers = {c["name"] for c in client.xpending("kraken:impressions:0", "kraken")
                 ["consumers"]}
    assert consumers <= {"trainer-b"}
    assert b.counters["claimed"] > 0


def test_a_state_of_another_layout_is_refused(redis_server):
    a = open_log(redis_server.url)
    state = a.position()
    b = open_log(redis_server.url, partitions=2)
    with pytest.raises(Exception, match="partitions"):
        b.seek(state)


def test_entries_trimmed_before_being_read_are_a_counted_gap(redis_server, client, caplog):
    for rid in range(1, 11):  # one millisecond apart: the source feeds some, not all
        write(client, rid, 1, clicked=lambda r: False)
        time.sleep(0.002)
    stream = open_log(redis_server.url, read_count=4)
    it = stream.batches(100)
    next(it)
    fed = int(stream.position()["log.read"][0])
    assert 0 < fed < 10
    write(client, 11, 100, maxlen=20, clicked=lambda r: False)  # the newest 20 are kept
    flush(client, 10_000)
    got: list = []
    with caplog.at_level(logging.WARNING, logger="kraken.data"):
        while 110 not in [r for r, _ in rids_labels(got)]:
            got += take(it, 1, timeout_s=5)
    rids = sorted(r for r, _ in rids_labels(got))
    early = [r for r in rids if r <= 10]
    assert early == list(range(1, len(early) + 1)) and len(early) >= fed  # read before
    assert rids[len(early):] == list(range(91, 111))
    assert stream.counters["lost"] == 110 - 20 - len(early)
    assert any(f"gap of {110 - 20 - len(early)} entries" in r.getMessage()
               and "kraken:impressions:0" in r.getMessage() for r in caplog.records)


def test_malformed_entries_are_counted_skipped_and_named(redis_server, client, caplog):
    good = impression(5, 1005)
    bad = [{"ts": "1001", "uid": "1"},                                   # no rid
           {**impression(2, 1002), "rid": "12x"},                      # non-numeric rid
           {**impression(3, 1003), "ts": "soon"},                      # non-numeric ts
           {**impression(4, 1004), "price": "cheap"},                  # unparsable dense
           {**impression(6, 1006), "user": "x" * 5000},                # over 4 KiB
           {**impression(7, 1007), "rid": "18446744073709551616"}]     # over 2**64 - 1
    ids = [client.xadd("kraken:impressions:0", e) for e in bad]
    client.xadd("kraken:impressions:0", good)
    ids.append(client.xadd("kraken:actions:0", {"rid": "5", "ts": "1006", "type": "purr"}))
    ids.append(client.xadd("kraken:actions:0", {"rid": "5", "type": "click"}))
    flush(client, 10_000)
    stream = open_log(redis_server.url)
    with caplog.at_level(logging.WARNING, logger="kraken.data"):
        got = take(stream.batches(10), 1)
    assert rids_labels(got) == [(5, 0)]
    assert stream.skipped == stream.counters["malformed"] == len(ids)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for i in ids:
        assert i in text
    assert "unknown action type 'purr'" in text and "invalid rid '12x'" in text


def test_a_read_of_malformed_entries_only_is_skipped_and_reading_goes_on(redis_server,
                                                                           client):
    client.xadd("kraken:impressions:0", {"ts": "1001", "uid": "1"})  # no rid
    client.xadd("kraken:actions:0", {"rid": "5", "type": "click"})  # no ts
    stream = open_log(redis_server.url)
    it = stream.batches(10)
    assert len(next(it)) == 0
    assert stream.counters["malformed"] == 2 and stream.counters["entries"] == 2
    write(client, 5, 1, clicked=lambda r: False)
    flush(client, 10_000)
    assert rids_labels(take(it, 1)) == [(5, 0)]


def test_lag_counts_entries_not_yet_fed_and_their_age(redis_server, client):
    for rid in range(1, 31):
        write(client, rid, 1, clicked=lambda r: False)
        time.sleep(0.002)
    stream = open_log(redis_server.url, read_count=5)
    assert stream.lag() == {"entries": 0.0, "seconds": 0.0}
    it = stream.batches(100)
    next(it)
    lag = stream.lag()
    fed = int(stream.position()["log.read"].sum())
    assert lag["entries"] == 30 - fed > 0
    assert 0.0 < lag["seconds"] < 60.0  # the oldest waiting entry was written just now


def test_caught_up_it_yields_empty_batches(redis_server):
    stream = open_log(redis_server.url, block_ms=20)
    it = stream.batches(8)
    assert [len(next(it)) for _ in range(3)] == [0, 0, 0]


def test_config_errors_name_their_key():
    with pytest.raises(Exception, match=r"log\.schema: missing"):
        LogConfig.from_dict({"url": "redis://x:1/0"})
    with pytest.raises(Exception, match=r"log\.schema\.dense\[0\]: 'ts' is a field"):
        LogConfig.from_dict({"schema": {"dense": ["ts"]}})
    with pytest.raises(Exception, match=r"log\.label_actions\[0\]: 'buy'"):
        LogConfig.from_dict({"schema": SCHEMA, "label_actions": ["buy"]})
    with pytest.raises(Exception, match=r"log\.world"):
        LogConfig.from_dict({"schema": SCHEMA, "world": 2})


def test_a_run_file_log_section_opens_the_log_stream(tmp_path):
    from kraken.data import open_stream
    from kraken.train.config import load_config

    path = tmp_path / "run.toml"
    path.write_text('[log]\nurl = "redis://127.0.0.1:1/0"\npartitions = 2\n'
                    '[log.schema]\ncategorical = ["user"]\n')
    run = load_config(path)
    assert run.data.source == "redis" and run.data.options["partitions"] == 2
    path.write_text('[log]\nurl = "redis://127.0.0.1:1/0"\n[log.schema]\ndense = [1]\n')
    with pytest.raises(Exception, match=r"log\.schema\.dense\[0\]"):
        load_config(path)
    with pytest.raises(Exception, match=r"data\.schema: missing"):
        open_stream("redis", url="redis://127.0.0.1:1/0")
    stream = open_stream("redis", url="redis://127.0.0.1:1/0", schema={"categorical": ["u"]})
    assert isinstance(stream, RedisLogStream)



def test_a_server_down_at_start_gives_empty_batches_until_it_answers(redis_server):
    redis_server.stop(kill=True)
    stream = open_log(redis_server.url)
    it = stream.batches(10)
    assert len(next(it)) == 0 and stream.outage_s > 0  # not blocked: the trainer idles
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    write(client, 1, 5)
    flush(client, 10_000)
    assert sorted(rids_labels(take(it, 5))) == expected(list(range(1, 6)))
    assert stream.counters["outages"] == 1 and stream.outage_s == 0.0


def test_start_latest_skips_what_was_there_before(redis_server, client):
    write(client, 1, 5)
    stream = open_log(redis_server.url, start="latest")
    it = stream.batches(10)
    assert len(next(it)) == 0
    write(client, 6, 5)
    flush(client, 10_000)
    assert sorted(rids_labels(take(it, 5))) == expected(list(range(6, 11)))
    assert stream.counters["lost"] == 0


def test_partitions_are_read_together_and_joined(redis_server, client):
    write(client, 1, 30, partitions=3)
    flush(client, 10_000, partitions=3)
    stream = open_log(redis_server.url, partitions=3, read_count=4)
    assert sorted(rids_labels(take(stream.batches(8), 30))) == expected(list(range(1, 31)))
    assert stream.position()["log.id"].shape == (6, 2)
    other = open_log(redis_server.url, partitions=3, rank=1, world=3, group="g2")
    assert other.config.keys == ("kraken:impressions:1", "kraken:actions:1")
    got = take(other.batches(8), 10)
    assert sorted(rids_labels(got)) == expected([r for r in range(1, 31) if r % 3 == 1])


def test_a_commit_while_the_server_is_down_waits_for_it(redis_server, client, caplog):
    write(client, 1, 10)
    flush(client, 10_000)
    stream = open_log(redis_server.url)
    it = stream.batches(20)
    take(it, 10)
    state = stream.position()
    redis_server.stop(kill=True)
    with caplog.at_level(logging.WARNING, logger="kraken.data"):
        stream.commit(state)  # not fatal: retried on reconnection
    assert any("acknowledging" in r.getMessage() for r in caplog.records)
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    next(it)  # the first read after the restart notices it (a new run id)
    assert stream.counters["outages"] == 1
    assert client.xpending("kraken:impressions:0", "kraken")["pending"] == 0
