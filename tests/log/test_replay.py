"""``kraken replay`` against a real redis-server: entries, actions, pacing, and the join
of what it wrote giving back the dataset's labels."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kraken.cli.main import main
from kraken.data import MovieLensStream, SyntheticConfig, SyntheticStream
from kraken.data._xadd import GroupWriter
from kraken.data.base import Batch
from kraken.data.join import JoinConfig, Joiner
from kraken.data.raw import RawChunk, raw_chunks
from kraken.data.replay import Pacer, ReplayConfig, log_entries, replay
from kraken.errors import ConfigError, TransportError
from tests.data.fixtures import movielens_tables, write_ml100k

redis = pytest.importorskip("redis")

N = 400
STREAM = SyntheticStream(SyntheticConfig(n_records=N, n_fields=3, n_dense=1,
                                         seconds_per_record=0.5))


def labels() -> np.ndarray:
    return np.concatenate([b.label for b in STREAM.batches(N)])


def read_log(client, prefix: str, partitions: int) -> list[tuple[bytes, str, dict]]:
    """Every entry of both streams as (entry id, stream, fields), in write order."""
    out = []
    for p in range(partitions):
        for what in ("impressions", "actions"):
            for eid, fields in client.xrange(f"{prefix}:{what}:{p}"):
                out.append((eid, what, {k.decode(): v.decode() for k, v in fields.items()}))
    return sorted(out, key=lambda e: tuple(int(x) for x in e[0].split(b"-")))


def test_replay_writes_every_record_and_a_delayed_click_per_positive(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    config = ReplayConfig(prefix="t", partitions=2, lag_mean_s=5, lag_max_s=30, seed=7,
                          rid_base=1000, pipeline=64)
    stats = replay(client, raw_chunks(STREAM, 100), config)
    y = labels()
    assert (stats.impressions, stats.actions) == (N, int(y.sum()))
    entries = read_log(client, "t", 2)
    imps = {int(f["rid"]): f for _, w, f in entries if w == "impressions"}
    acts = [f for _, w, f in entries if w == "actions"]
    assert sorted(imps) == list(range(1000, 1000 + N))
    assert sorted(int(a["rid"]) for a in acts) == (np.flatnonzero(y) + 1000).tolist()
    for p in range(2):  # partition = rid mod 2 on both streams
        for _, f in client.xrange(f"t:impressions:{p}") + client.xrange(f"t:actions:{p}"):
            assert int(f[b"rid"]) % 2 == p
    lags = [int(a["ts"]) - int(imps[int(a["rid"])]["ts"]) for a in acts]
    assert min(lags) >= 1 and max(lags) <= 30 and len(set(lags)) > 3
    assert all(a["type"] == "click" for a in acts)
    assert set(imps[1000]) == {"rid", "ts", "c0", "c1", "c2", "d0"}


def test_joining_the_written_log_gives_back_the_datasets_labels(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    replay(client, raw_chunks(STREAM, 64), ReplayConfig(lag_mean_s=20, lag_max_s=60, seed=1))
    joiner = Joiner(JoinConfig(window_s=61))
    # In event-time order (entry ids order each stream, not the two together).
    entries = sorted(read_log(client, "kraken", 1),
                     key=lambda e: (int(e[2]["ts"]), e[1] == "actions"))
    cuts = [0] + [i for i in range(1, len(entries)) if entries[i][1] != entries[i - 1][1]]
    got: dict[int, float] = {}
    for a, b in zip(cuts, cuts[1:] + [len(entries)], strict=True):
        run = [f for _, _, f in entries[a:b]]
        rid = np.array([int(f["rid"]) for f in run], np.uint64)
        ts = np.array([int(f["ts"]) for f in run], np.int64)
        if entries[a][1] == "impressions":
            keys = np.array([[int(f[c]) for c in ("c0", "c1", "c2")] for f in run], np.int64)
            dense = np.array([[float(f["d0"])] for f in run], np.float32)
            joiner.add_impressions(rid, ts, Batch(keys=keys, dense=dense,
                                                  label=np.zeros(len(run), np.float32),
                                                  event_time=ts))
        else:
            joiner.add_actions(rid, ts, np.zeros(len(run), np.int8))
        batch = joiner.emit()
        if batch is not None:
            got.update(zip(joiner.emitted_rid.tolist(), batch.label.tolist(), strict=True))
    joiner.advance(int(1e12))
    batch = joiner.emit()
    got.update(zip(joiner.emitted_rid.tolist(), batch.label.tolist(), strict=True))
    c = joiner.counters
    assert (c["corrections"], c["orphan_actions"], c["pending"]) == (0, 0, 0)
    assert [got[r] for r in range(N)] == labels().tolist()


def test_movielens_ratings_of_4_and_more_become_clicks_and_maxlen_trims(
        redis_server, tmp_path: Path) -> None:
    tables = movielens_tables(300, seed=5)
    stream = MovieLensStream(write_ml100k(tmp_path / "ml", tables), "ml-100k")
    client = redis.Redis.from_url(redis_server.url)
    stats = replay(client, raw_chunks(stream), ReplayConfig(prefix="ml", maxlen=50))
    assert stats.impressions == 300
    assert stats.actions == sum(r[2] >= 4 for r in tables["ratings"]) > 0
    assert client.xlen("ml:impressions:0") < 300  # trimmed near 50 (MAXLEN ~)
    (_, first), = client.xrevrange("ml:impressions:0", count=1)
    assert first[b"genres"] is not None and int(first[b"ts"]) == max(r[3] for r in
                                                                      tables["ratings"])


def test_rate_limit_holds_loosely(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    rate = 2000.0
    start = time.monotonic()
    stats = replay(client, raw_chunks(STREAM, 100), ReplayConfig(rate=rate, limit=300))
    elapsed = time.monotonic() - start
    total = stats.impressions + stats.actions
    assert stats.impressions == 300
    # The last group starts no earlier than (total - group) / rate after the first.
    assert elapsed >= (total - rate / 20) / rate * 0.95


def test_speedup_paces_by_event_time_with_an_injected_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(None, 10.0, clock=lambda: now[0], sleep=sleep)
    for t in (1000, 1000, 1020, 1050, 1040):
        pacer.wait(t, 1)
    assert now[0] == pytest.approx(5.0)  # (1050 - 1000) / 10, the late 1040 not waited for
    assert len(slept) == 2

    def written(chunk_rows: int) -> list[tuple[int, int, bool]]:
        return sorted((r, t, e.columns is None)
                      for e in log_entries(raw_chunks(STREAM, chunk_rows), ReplayConfig(seed=3))
                      for r, t in zip(e.rid.tolist(), e.ts.tolist(), strict=True))

    assert written(50) == written(170)  # lags do not depend on the chunking
    clash = RawChunk({"ts": np.array(["1"], object)}, np.ones(1, np.float32),
                     np.zeros(1, np.int64))
    with pytest.raises(ConfigError, match="clash"):
        list(log_entries([clash], ReplayConfig()))
    # An action goes out once an impression at least as late as it has (or at the end).
    newest, runs = -1, list(log_entries(raw_chunks(STREAM, 64), ReplayConfig(lag_mean_s=30)))
    for i, e in enumerate(runs):
        if e.columns is not None:
            newest = max(newest, int(e.ts.max()))
        elif any(r.columns is not None for r in runs[i:]):
            assert int(e.ts.max()) <= newest
    assert runs[-1].columns is None and int(runs[-1].ts.max()) > newest


def test_cli_replays_a_config_file(redis_server, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "rt.toml"
    cfg.write_text(f'[log]\nurl = "{redis_server.url}"\nprefix = "demo"\n\n'
                   '[replay]\nlag_mean_s = 3\nseed = 2\n\n'
                   '[replay.data]\nsource = "synthetic"\nn_records = 500\nn_fields = 2\n')
    assert main(["replay", "--config", str(cfg), "--limit", "120", "--quiet"]) == 0
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("demo:impressions:0") == 120
    out = capsys.readouterr().out
    assert "replayed 120 impressions" in out and 'categorical = ["c0", "c1"]' in out
    assert main(["replay", "--config", str(cfg), "--rate", "0"]) == 2
    assert "replay.rate: must be > 0" in capsys.readouterr().err
    example = Path(__file__).resolve().parents[2] / "examples" / "realtime" / "replay.toml"
    assert main(["replay", "--config", str(example), "--url", redis_server.url,
                 "--limit", "30", "--quiet"]) == 0
    assert client.xlen("kraken:impressions:0") == 30
    # A trainer's run file reading the log ([log] only), the dataset from another file.
    run = tmp_path / "run.toml"
    run.write_text(f'[log]\nurl = "{redis_server.url}"\nprefix = "two"\npartitions = 3\n'
                   '[log.schema]\ncategorical = ["c0", "c1"]\n')
    data = tmp_path / "data.toml"
    data.write_text('[data]\nsource = "synthetic"\nn_records = 90\nn_fields = 2\n')
    assert main(["replay", "--config", str(run), "--data", str(data), "--rid-base", "7",
                 "--seed", "4", "--lag-max-s", "9", "--quiet"]) == 0
    rids = [int(f[b"rid"]) for p in range(3) for _, f in client.xrange(f"two:impressions:{p}")]
    assert sorted(rids) == list(range(7, 97))


def test_a_server_restart_loses_no_entry(redis_server) -> None:
    """The server stops and comes back (append-only file) while the replay writes: every
    record's impression and every click is in the log afterwards, some maybe twice."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    done: dict[str, object] = {}

    def run() -> None:
        try:
            done["stats"] = replay(client, raw_chunks(STREAM, 50),
                                   ReplayConfig(rate=1500.0, reconnect_s=20))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            done["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(0.15)
        redis_server.stop()
        time.sleep(0.3)
        redis_server.start()
    finally:
        thread.join(timeout=30)
    assert "error" not in done, done.get("error")
    stats = done["stats"]
    assert stats.outages >= 1
    entries = read_log(client, "kraken", 1)
    imps = {int(f["rid"]) for _, w, f in entries if w == "impressions"}
    acts = {int(f["rid"]) for _, w, f in entries if w == "actions"}
    assert imps == set(range(N))
    assert acts == set(np.flatnonzero(labels()).tolist())


def test_reconnection_gives_up_after_its_budget_with_a_transport_error() -> None:
    now = [0.0]

    class Down:
        def script_load(self, script: str) -> None:
            raise ConnectionRefusedError("down")

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(TransportError, match="unreachable for 5"):
        replay(Down(), raw_chunks(STREAM, 50), ReplayConfig(reconnect_s=5.0),
               clock=lambda: now[0], sleep=sleep, retry_on=(ConnectionRefusedError,))


def test_a_group_is_written_again_after_the_servers_script_cache_is_flushed(
        redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    writer = GroupWriter(client, maxlen=None)
    assert writer.write(["k:0", "k:1"], ["a", "b"], [0, 1, 1],
                        [["x", "y", "é"], ["", "z", "w"]]) == 3
    client.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    assert writer.write(["k:0", "k:1"], ["a", "b"], [0], [["u"], ["v"]]) == 1
    assert [f for _, f in client.xrange("k:0")] == [{b"a": b"x", b"b": b""},
                                                   {b"a": b"u", b"b": b"v"}]
    assert [f for _, f in client.xrange("k:1")] == [{b"a": b"y", b"b": b"z"},
                                                   {b"a": "é".encode(), b"b": b"w"}]
