"""Publishing versions and following them: whole versions, gaps healed, restarts, pruning."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kraken.errors import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    InputError,
    NotReadyError,
    VersionGapError,
)
from kraken.optim import SGD
from kraken.ps import LocalPS
from kraken.serving import DirectoryFollower, ModelVersion, Publisher, Replica, TableUpdate
from kraken.serving.directory import REQUEST, scan_versions
from kraken.table import TableConfig
from tests.serving.helpers import probe_records, publishing_trainer, reference_scores, spec_of

RECORDS = probe_records(48)


def _same_rows(replica: Replica, tr) -> None:  # noqa: ANN001
    for name in tr.ps.tables:
        (rows,) = tr.ps.snapshot(name)
        assert sorted(replica.keys(name).tolist()) == sorted(rows.keys.tolist()), name
        np.testing.assert_array_equal(replica.lookup(name, rows.keys), rows.weights)


def test_every_version_scores_exactly_as_the_trainer(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    checked = []

    def on_publish(v: ModelVersion) -> None:
        follower.poll()
        assert replica.version == v.version
        pred = replica.predict_records(RECORDS)
        np.testing.assert_array_equal(pred.scores, reference_scores(tr, RECORDS))
        checked.append(v.version)

    tr, pub = publishing_trainer(tmp_path, on_publish=on_publish, n_records=8000)
    tr.run()
    assert checked == list(range(1, pub.version + 1)) and len(checked) > 10
    assert tr.ps.stats()["emb"].evicted > 0  # evictions were synced too
    _same_rows(replica, tr)
    assert follower.gaps == 0 and follower.errors == 0


def test_a_lost_delta_is_detected_and_healed_by_a_requested_snapshot(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)

    def on_publish(v: ModelVersion) -> None:
        if v.version == 5 and not v.is_snapshot:
            (tmp_path / "versions" / v.filename()).unlink()
        follower.poll()

    tr, pub = publishing_trainer(tmp_path, on_publish=on_publish, n_records=6000)
    tr.run()
    _, snapshots = scan_versions(tmp_path)
    # delta 5 was lost: seen as a gap once delta 6 exists, a snapshot is asked for, and
    # the publisher adds one to its next version (7)
    assert follower.gaps == 1 and 7 in snapshots
    assert not (tmp_path / REQUEST).exists()
    assert replica.version == pub.version and replica.snapshots_loaded == 2
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores,
                                  reference_scores(tr, RECORDS))


def test_a_restarted_trainer_continues_the_numbering(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    first, pub1 = publishing_trainer(tmp_path, n_records=3000)
    first.run()
    follower.poll()
    assert replica.version == pub1.version
    second, pub2 = publishing_trainer(tmp_path, n_records=3000, seed=1)
    second.run()
    assert pub2.lineage != pub1.lineage
    follower.poll()
    assert replica.version == pub2.version > pub1.version + 1
    assert replica.lineage == pub2.lineage and replica.snapshots_loaded == 2
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores,
                                  reference_scores(second, RECORDS))


def test_old_versions_are_pruned_and_a_late_follower_bootstraps(tmp_path: Path) -> None:
    tr, pub = publishing_trainer(tmp_path, snapshot_interval=0.0, n_records=5000)
    tr.run()
    deltas, snapshots = scan_versions(tmp_path)
    assert sorted(snapshots) == [pub.version - 1, pub.version]
    assert sorted(deltas) == [pub.version]
    replica = Replica(precision="fp16")
    assert DirectoryFollower(replica, tmp_path).poll() == 1  # the newest snapshot
    assert replica.version == pub.version and replica.snapshots_loaded == 1
    ref = reference_scores(tr, RECORDS)
    np.testing.assert_allclose(replica.predict_records(RECORDS).scores, ref, atol=2e-3)
    trainer_bytes = sum(s.memory_bytes for s in tr.ps.stats().values())
    assert replica.info().memory_bytes < 0.6 * trainer_bytes


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_publisher_cadence_dense_interval_and_empty_versions(tmp_path: Path) -> None:
    tr, _ = publishing_trainer(tmp_path / "unused", n_records=1000)
    clock = _Clock()
    sent: list[ModelVersion] = []
    pub = Publisher(tr.ps, tr.model, spec_of(tr), tmp_path, sync_interval=1.0,
                    dense_sync_interval=60.0, clock=clock, on_publish=sent.append)
    assert pub.maybe_publish(5).is_snapshot and sent[-1].version == 1
    assert pub.maybe_publish(6) is None  # within the sync interval
    clock.t += 1.5
    assert pub.maybe_publish(7) is None and len(sent) == 1  # nothing changed: no version
    keys = np.arange(3, dtype=np.int64)
    tr.ps.pull({"emb": keys}, train=True, now=7)
    tr.ps.pull({"emb": keys}, train=True, now=7)  # count-min admits on the 2nd sighting
    clock.t += 1.5
    v = pub.maybe_publish(8)
    assert v.base == 1 and v.dense is None and v.max_event_time == 8
    assert sorted(v.tables["emb"].keys.tolist()) == [0, 1, 2]
    pub.request_dense()
    v = pub.publish()
    assert v.dense is not None and v.dense_version == v.version == 3
    clock.t += 61
    v = pub.publish()
    assert v.dense is not None and not v.tables["emb"].keys.size
    assert pub.publish() is None


def _versions(tmp_path: Path) -> tuple[list[ModelVersion], dict[int, np.ndarray]]:
    got: list[ModelVersion] = []
    refs: dict[int, np.ndarray] = {}

    def on_publish(v: ModelVersion) -> None:
        got.append(v)
        refs[v.version] = reference_scores(tr, RECORDS)

    tr, _ = publishing_trainer(tmp_path, on_publish=on_publish, n_records=6000)
    tr.run()
    return got, refs


def test_readers_see_one_whole_version_while_versions_apply(tmp_path: Path) -> None:
    versions, refs = _versions(tmp_path)
    replica = Replica()
    replica.apply(versions[0])
    done = threading.Event()

    def apply_all() -> None:
        for v in versions[1:]:
            if not v.is_snapshot:
                replica.apply(v)
                time.sleep(0.003)
        done.set()

    seen = set()
    t = threading.Thread(target=apply_all)
    t.start()
    for _ in range(2000):
        pred = replica.predict_records(RECORDS)
        np.testing.assert_array_equal(pred.scores, refs[pred.version])
        seen.add(pred.version)
        if done.is_set():
            break
    t.join()
    assert len(seen) > 3


def test_updates_that_do_not_follow_are_refused_and_change_nothing(tmp_path: Path) -> None:
    versions, refs = _versions(tmp_path)
    replica = Replica()
    with pytest.raises(NotReadyError):
        replica.predict_records(RECORDS)
    with pytest.raises(NotReadyError):
        replica.keys("emb")
    with pytest.raises(VersionGapError):
        replica.apply(versions[1])
    replica.apply(versions[0])
    with pytest.raises(VersionGapError):
        replica.apply(versions[2])
    bad = ModelVersion(version=2, base=1, publish_time=0.0, max_event_time=0,
                       lineage=versions[0].lineage,
                       tables={"nope": TableUpdate(np.zeros(1, np.int64),
                                                   np.zeros((1, 8), np.float32),
                                                   np.zeros(0, np.int64))})
    with pytest.raises(CheckpointMismatchError):
        replica.apply(bad)
    with pytest.raises(InputError, match="unknown table 'nope'"):
        replica.keys("nope")
    with pytest.raises(InputError, match="unknown table 'nope'"):
        replica.lookup("nope", np.zeros(1, np.int64))
    assert replica.version == 1
    np.testing.assert_array_equal(replica.predict_records(RECORDS).scores, refs[1])


def test_a_corrupt_file_is_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "snapshot-000000000001.kdat").write_bytes(b"garbage" * 10)
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path)
    assert follower.poll() == 0 and follower.errors == 1 and not replica.ready
    assert "CorruptCheckpointError" in follower.last_error


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_ps_snapshot_has_float32_rows_and_continues_into_deltas(precision: str) -> None:
    ps = LocalPS({"emb": TableConfig(dim=3, optimizer=SGD(), precision=precision)})
    keys = np.arange(10, dtype=np.int64)
    ps.pull({"emb": keys}, train=True, now=1)
    (snap,) = ps.snapshot("emb")
    assert snap.since == 0 and snap.weights.dtype == np.float32 and not snap.evicted.size
    np.testing.assert_array_equal(snap.weights, ps.pull({"emb": snap.keys})["emb"])
    ps.push({"emb": (keys[:2], np.ones((2, 3), np.float32))}, now=2)
    (delta,) = ps.delta("emb", [snap.version])
    assert sorted(delta.keys.tolist()) == [0, 1]


def test_a_failing_transport_does_not_stop_training(tmp_path: Path) -> None:
    tr, pub = publishing_trainer(tmp_path, n_records=2000)

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def latest_version(self) -> int:
            return 0

        def wants_snapshot(self) -> bool:
            return False

        def send(self, v: ModelVersion) -> None:
            self.calls += 1
            if self.calls == 3:
                raise OSError("disk full")
            self.sent.append(v)

        def close(self) -> None:
            pass

    flaky = Flaky()
    flaky.sent = []  # type: ignore[attr-defined]
    pub.transport = flaky
    assert tr.run().samples == 2000
    assert pub.errors == 1 and "disk full" in pub.last_error
    kinds = [v.is_snapshot for v in flaky.sent]  # type: ignore[attr-defined]
    assert kinds[0] and kinds[2]  # after the failure, the next version is a snapshot


@pytest.mark.parametrize("sizes", [(0,), (3, 0), (5, 7, 0), (1, 64, 3), (0, 0)])
def test_version_bytes_round_trip_with_odd_and_empty_arrays(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(sizes))
    tables = {f"t{i}": TableUpdate(keys=np.arange(n, dtype=np.int64),
                                   weights=rng.standard_normal((n, 3)).astype(np.float32),
                                   evicted=np.arange(n % 5, dtype=np.int64))
              for i, n in enumerate(sizes)}
    v = ModelVersion(version=3, base=2, publish_time=1.5, max_event_time=7, lineage="x",
                     tables=tables)
    data = v.to_bytes()
    back = ModelVersion.from_bytes(data)
    assert back.version == 3 and back.base == 2 and sorted(back.tables) == sorted(tables)
    for name, t in tables.items():
        np.testing.assert_array_equal(back.tables[name].weights, t.weights)
        np.testing.assert_array_equal(back.tables[name].evicted, t.evicted)
    v.write(Path(tempfile.mkdtemp()) / "v.kdat")
    with pytest.raises(CorruptCheckpointError):
        ModelVersion.from_bytes(data[:-1])
