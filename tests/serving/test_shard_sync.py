"""Serving from shards: every shard publishes its rows, the trainer only the dense weights,
and a replica follows a version vector (one entry per shard plus the dense version)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.errors import CheckpointMismatchError, NotReadyError, VersionGapError
from kraken.serving import DirectoryFollower, ModelVersion, Publisher, Replica
from kraken.serving.directory import REQUEST, read_layout, scan_versions, shard_dir
from kraken.serving.shard_publisher import ShardPublisher
from kraken.serving.version import TableUpdate
from kraken.train import Trainer
from tests.serving.helpers import probe_records, reference_scores, sharded_trainer, spec_of

RECORDS = probe_records(48)


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _setup(model_dir: Path, hook: Callable[[ModelVersion], None], *, n_records: int = 6000,
           snapshot_every: int = 0) -> tuple[Trainer, Publisher, list[ShardPublisher]]:
    tr = sharded_trainer(2, n_records=n_records)
    clock = _Clock()
    shards = [ShardPublisher(ep, model_dir, sync_interval=0.0, snapshot_every=snapshot_every,
                             clock=clock)
              for ep in tr.ps.endpoints]  # type: ignore[attr-defined]

    def on_dense(v: ModelVersion) -> None:
        clock.t += 1.0
        for sp in shards:
            sp.publish()
        hook(v)

    pub = Publisher(tr.ps, tr.model, spec_of(tr), model_dir, rows=False, sync_interval=0.0,
                    dense_sync_interval=0.0, snapshot_interval=1e9, on_publish=on_dense,
                    clock=clock)
    tr.publisher = pub
    return tr, pub, shards


def _same_rows_as_shards(replica: Replica, tr: Trainer) -> None:
    """The replica holds exactly the union of the shards' rows, with their weights."""
    for name in tr.ps.tables:
        parts = tr.ps.snapshot(name)
        keys = np.concatenate([p.keys for p in parts])
        weights = np.concatenate([p.weights for p in parts])
        assert len(parts) == 2 and all(p.keys.shape[0] > 0 for p in parts)
        assert sorted(replica.keys(name).tolist()) == sorted(keys.tolist()), name
        np.testing.assert_array_equal(replica.lookup(name, keys), weights)


def test_replica_follows_every_shard_and_scores_as_the_trainer(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    checked: list[tuple[int, tuple[int, ...]]] = []

    def check(v: ModelVersion) -> None:
        assert v.shards == 2 and not v.tables  # the trainer publishes no rows
        follower.poll()
        vector = tuple(sp.version for sp in shards)
        pred = replica.predict_records(RECORDS)
        assert (pred.version, pred.shard_versions) == (v.version, vector)
        np.testing.assert_array_equal(pred.scores, reference_scores(tr, RECORDS))
        checked.append((v.version, vector))

    tr, pub, shards = _setup(tmp_path, check, n_records=16000)
    tr.run()
    assert len(checked) > 8 and [c[0] for c in checked] == list(range(1, pub.version + 1))
    assert all(sp.version > 5 for sp in shards)
    assert tr.ps.stats()["emb"].evicted > 0  # evictions were published by the shards too
    _same_rows_as_shards(replica, tr)
    assert read_layout(tmp_path) == 2
    for i in range(2):  # each shard's versions live in its own stream
        deltas, snapshots = scan_versions(shard_dir(tmp_path, i))
        assert sorted(snapshots) == [1] and len(deltas) == shards[i].version - 1
    _, dense_snapshots = scan_versions(tmp_path)
    assert all(ModelVersion.read(p).tables == {} for p in dense_snapshots.values())
    assert follower.gaps == 0 and follower.errors == 0
    info = replica.info()
    assert [s.version for s in info.shards] == [sp.version for sp in shards]
    assert [s.snapshots_loaded for s in info.shards] == [1, 1]


def test_a_lost_shard_delta_heals_from_that_shards_snapshot_only(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    lost: list[int] = []

    def check(v: ModelVersion) -> None:
        sp = shards[0]
        if not lost and sp.version == 4:
            (shard_dir(tmp_path, 0) / "versions" / f"delta-{4:012d}.kdat").unlink()
            lost.append(4)
        follower.poll()
        if lost and replica.shard_versions[0] == 3:  # stuck before the lost delta
            assert replica.shard_versions[1] == shards[1].version  # the other shard moves on

    tr, pub, shards = _setup(tmp_path, check)
    tr.run()
    follower.poll()
    assert lost == [4]
    assert follower.shard_gaps == [1, 0]
    info = replica.info()
    assert [s.snapshots_loaded for s in info.shards] == [2, 1]
    assert not (shard_dir(tmp_path, 0) / REQUEST).exists()
    assert not (shard_dir(tmp_path, 1) / REQUEST).exists()
    _, snaps0 = scan_versions(shard_dir(tmp_path, 0))
    _, snaps1 = scan_versions(shard_dir(tmp_path, 1))
    assert len(snaps0) == 2 and sorted(snaps1) == [1]
    assert replica.shard_versions == tuple(sp.version for sp in shards)
    _same_rows_as_shards(replica, tr)
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores,
                                  reference_scores(tr, RECORDS))


def test_periodic_shard_snapshots_and_a_late_follower(tmp_path: Path) -> None:
    tr, pub, shards = _setup(tmp_path, lambda v: None, n_records=4000, snapshot_every=4)
    tr.run()
    for i in range(2):
        _, snaps = scan_versions(shard_dir(tmp_path, i))
        assert len(snaps) == 2  # several written, the newest two kept (pruned)
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    follower.poll()
    assert replica.ready and replica.shard_versions == tuple(sp.version for sp in shards)
    _same_rows_as_shards(replica, tr)
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores,
                                  reference_scores(tr, RECORDS))


def _row_version(shard: int, version: int, base: int | None, keys: list[int],
                 value: float, evicted: list[int] = (), lineage: str = "s") -> ModelVersion:
    k = np.array(keys, dtype=np.int64)
    tables = {"emb": TableUpdate(keys=k, weights=np.full((k.size, 8), value, np.float32),
                                 evicted=np.array(evicted, dtype=np.int64)),
              "wide": TableUpdate(keys=k, weights=np.full((k.size, 1), value, np.float32),
                                  evicted=np.array(evicted, dtype=np.int64))}
    return ModelVersion(version=version, base=base, publish_time=1.0, max_event_time=0,
                        lineage=lineage, tables=tables, shard=shard, shards=2)


def test_shard_versions_apply_in_order_per_shard_and_refusals_change_nothing(
        tmp_path: Path) -> None:
    tr, pub, _ = _setup(tmp_path, lambda v: None, n_records=600)
    replica = Replica()
    with pytest.raises(VersionGapError):  # no model yet
        replica.apply(_row_version(0, 1, None, [1], 1.0))
    pub.publish()
    (dense,) = [ModelVersion.read(p) for p in scan_versions(tmp_path)[1].values()]
    replica.apply(dense)
    assert replica.loaded and not replica.ready  # no rows from the shards yet
    with pytest.raises(NotReadyError):
        replica.predict_records(RECORDS)
    replica.apply(_row_version(0, 1, None, [1, 2, 3], 1.0))
    replica.apply(_row_version(1, 7, None, [10, 11], 2.0))
    assert replica.ready and replica.shard_versions == (1, 7)
    before = {n: sorted(replica.keys(n).tolist()) for n in ("emb", "wide")}
    for bad, error in [(_row_version(0, 3, 2, [4], 9.0), VersionGapError),      # gap
                       (_row_version(0, 2, 1, [4], 9.0, lineage="x"), VersionGapError),
                       (ModelVersion(version=2, base=1, publish_time=0.0, max_event_time=0,
                                     lineage="s", tables={}, shard=0, shards=3),
                        CheckpointMismatchError)]:
        with pytest.raises(error):
            replica.apply(bad)
    assert {n: sorted(replica.keys(n).tolist()) for n in ("emb", "wide")} == before
    assert replica.shard_versions == (1, 7)
    replica.apply(_row_version(0, 2, 1, [4], 3.0, evicted=[1]))
    assert sorted(replica.keys("emb").tolist()) == [2, 3, 4, 10, 11]
    # shard 0's snapshot replaces exactly shard 0's rows; shard 1's stay
    replica.apply(_row_version(0, 9, None, [5], 4.0))
    assert sorted(replica.keys("emb").tolist()) == [5, 10, 11]
    np.testing.assert_array_equal(replica.lookup("emb", np.array([10, 5]))[:, 0], [2.0, 4.0])
    assert replica.shard_versions == (9, 7)
    pred = replica.predict_records(RECORDS)
    assert pred.shard_versions == (9, 7) and pred.version == dense.version


_DENSE: list[ModelVersion] = []


def _dense_snapshot() -> ModelVersion:
    """A trainer's dense-only snapshot (spec, dense weights, shards = 2), built once."""
    if not _DENSE:
        with tempfile.TemporaryDirectory() as d:
            _, pub, _ = _setup(Path(d), lambda v: None, n_records=600)
            pub.publish()
            (path,) = scan_versions(d)[1].values()
            _DENSE.append(ModelVersion.read(path))
    return _DENSE[0]


_OPS = st.lists(st.tuples(st.sampled_from(["upsert", "evict", "lose", "snapshot"]),
                          st.integers(0, 1), st.sets(st.integers(0, 15), max_size=6)),
                max_size=30)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_shard_streams_against_a_reference(ops: list[tuple[str, int, set[int]]]) -> None:
    """Two shards (key k on shard k % 2) publish versions; some are lost. Whatever
    happens, the replica holds for each shard exactly that shard's rows at the replica's
    version of it (the other shard is never touched), and a snapshot heals a gap."""
    replica = Replica()
    replica.apply(_dense_snapshot())
    truth: list[dict[int, float]] = [{}, {}]      # each shard's rows now
    at: list[dict[int, float]] = [{}, {}]         # what the replica should hold per shard
    version, applied, lost, value = [0, 0], [0, 0], [False, False], [0.0]

    def publish(i: int, base: int | None, keys: list[int], evicted: list[int],
                deliver: bool) -> None:
        version[i] += 1
        v = _row_version(i, version[i], base, keys, 0.0, evicted)
        for t in v.tables.values():  # each key's current value
            t.weights[:] = np.array([truth[i][k] for k in keys], np.float32)[:, None]
        if not deliver:
            lost[i] = True
            return
        try:
            replica.apply(v)
        except VersionGapError:
            assert lost[i] and base is not None
            return
        lost[i] = False
        at[i], applied[i] = dict(truth[i]), version[i]

    publish(0, None, [], [], True)
    publish(1, None, [], [], True)
    for kind, i, raw in ops:
        keys = sorted(k for k in raw if k % 2 == i)
        if kind == "upsert":
            for k in keys:
                value[0] += 1.0
                truth[i][k] = value[0]
            publish(i, version[i], keys, [], True)
        elif kind == "evict":
            gone = [k for k in keys if k in truth[i]]
            for k in gone:
                del truth[i][k]
            publish(i, version[i], [], gone, True)
        elif kind == "lose":
            for k in keys:
                value[0] += 1.0
                truth[i][k] = value[0]
            publish(i, version[i], keys, [], False)
        else:
            publish(i, None, sorted(truth[i]), [], True)
        for j in range(2):
            held = {int(k): float(w) for k, w in zip(
                replica.keys("wide"), replica.lookup("wide", replica.keys("wide"))[:, 0],
                strict=True) if k % 2 == j}
            assert held == at[j], (j, held, at[j])
        assert replica.shard_versions == tuple(applied)
    for i in range(2):  # heal whatever gap is left with a snapshot
        publish(i, None, sorted(truth[i]), [], True)
    assert replica.shard_versions == tuple(version)
    keys = replica.keys("emb")
    assert sorted(keys.tolist()) == sorted([*truth[0], *truth[1]])
    np.testing.assert_array_equal(replica.lookup("emb", keys)[:, 3],
                                  [{**truth[0], **truth[1]}[int(k)] for k in keys])


def test_http_api_names_the_version_vector_and_each_shards_lag(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # starlette's TestClient prefers "httpx2"; httpx works
        warnings.simplefilter("ignore", UserWarning)
        from fastapi.testclient import TestClient

    from kraken.serving import create_app

    tr, pub, shards = _setup(tmp_path, lambda v: None, n_records=2000)
    tr.run()
    replica = Replica(clock=lambda: 5000.0)
    follower = DirectoryFollower(replica, tmp_path)
    follower.poll()
    client = TestClient(create_app(replica, clock=lambda: 5000.0,
                                   sync_status=lambda: {"gaps": follower.gaps,
                                                        "shard_gaps": follower.shard_gaps}))
    vector = [sp.version for sp in shards]
    r = client.post("/v1/predict", json={"instances": RECORDS[:3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shard_versions"] == vector and body["version"] == pub.version
    info = client.get("/v1/model").json()
    assert [s["version"] for s in info["shards"]] == vector
    for i, (s, sp) in enumerate(zip(info["shards"], shards, strict=True)):
        deltas, _ = scan_versions(shard_dir(tmp_path, i))
        published = ModelVersion.read(deltas[sp.version]).publish_time
        assert s["published_at"] == published and s["lag_s"] == 5000.0 - published
        assert s["history"][-1] == [sp.version, published, 5000.0]
    text = client.get("/metrics").text
    for k, v in enumerate(vector):
        assert f'kraken_serving_shard_version{{shard="{k}"}} {float(v)}' in text
    assert 'kraken_serving_shard_lag_seconds{shard="1"}' in text


def test_shard_publisher_cadence_requests_and_restores(tmp_path: Path) -> None:
    from kraken.ps.shard import Shard
    from kraken.table import TableConfig

    shard = Shard({"emb": TableConfig(dim=4, capacity=100)}, index=1, of=2)
    clock = _Clock()
    written: list[ModelVersion] = []
    sp = ShardPublisher(shard, tmp_path, sync_interval=1.0, snapshot_every=3, clock=clock,
                        on_publish=written.append)

    def step(keys: list[int], now: int = 5) -> None:
        k = np.array(keys, dtype=np.int64)
        shard.pull({"emb": k}, train=True, now=now)
        shard.push({"emb": (k, np.ones((k.size, 4), np.float32))}, now=now)

    assert sp.maybe_publish() is not None  # the first snapshot, even of an empty shard
    assert [(v.kind, v.version, v.shard, v.shards) for v in written] == [("snapshot", 1, 1, 2)]
    step([1, 2])
    clock.t += 0.5
    assert sp.maybe_publish() is None  # not due yet
    clock.t += 0.5
    v = sp.maybe_publish()
    assert v is not None and (v.kind, v.base) == ("delta", 1)
    assert sorted(v.tables["emb"].keys.tolist()) == [1, 2] and v.max_event_time == 5
    clock.t += 1.0
    assert sp.maybe_publish() is None and len(written) == 2  # nothing changed: no version
    for keys in ([3], [4]):  # the 3rd delta since the snapshot brings the next snapshot
        step(keys)
        clock.t += 1.0
        sp.maybe_publish()
    assert [(v.kind, v.version) for v in written[2:]] == [("delta", 3), ("delta", 4),
                                                           ("snapshot", 4)]
    assert sorted(written[-1].tables["emb"].keys.tolist()) == [1, 2, 3, 4]
    (shard_dir(tmp_path, 1) / REQUEST).touch()  # a follower asks: a snapshot at once
    clock.t += 1.0
    v = sp.maybe_publish()
    assert v is not None and (v.kind, v.version) == ("snapshot", 5)
    assert not (shard_dir(tmp_path, 1) / REQUEST).exists()
    shard.checkpoint = "ckpt-7"  # restored from a checkpoint: its cursors mean nothing now
    clock.t += 1.0
    v = sp.maybe_publish()
    assert v is not None and (v.kind, v.version) == ("snapshot", 6)
    again = ShardPublisher(shard, tmp_path, clock=clock)  # a restarted shard process
    assert again.version == 6 and again.lineage != sp.lineage
    v = again.publish()
    assert v is not None and (v.kind, v.version) == ("snapshot", 7)


def test_a_restarted_trainer_keeps_the_shards_rows_another_model_reloads_them(
        tmp_path: Path) -> None:
    tr, pub, shards = _setup(tmp_path, lambda v: None, n_records=2000)
    tr.run()
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    follower.poll()
    vector, keys = replica.shard_versions, sorted(replica.keys("emb").tolist())
    again = Publisher(tr.ps, tr.model, spec_of(tr), tmp_path, rows=False)
    again.publish()  # a new trainer run: its first version is a snapshot of the same spec
    follower.poll()
    assert replica.version == again.version and replica.lineage == again.lineage
    assert replica.shard_versions == vector and sorted(replica.keys("emb").tolist()) == keys
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores,
                                  reference_scores(tr, RECORDS))
    fm = sharded_trainer(2, n_records=600, model="fm")  # another model, same tables
    Publisher(fm.ps, fm.model, spec_of(fm), tmp_path, rows=False).publish()
    follower._dense.poll()  # the trainer's stream alone: a new store, no shard rows yet
    assert replica.spec.model == "fm" and replica.shard_versions == (0, 0)
    assert not replica.ready and replica.keys("emb").size == 0
    follower.poll()  # every shard's snapshot, then its deltas
    assert replica.ready and replica.shard_versions == vector
    assert sorted(replica.keys("emb").tolist()) == keys
    assert follower.gaps == 0
