"""gRPC push transport: versions pushed to servers, late and failing servers caught up."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc")

from kraken.serving import DirectoryFollower, FanoutTransport, Replica  # noqa: E402
from kraken.serving.push import PushReceiver, PushTransport, serve_push  # noqa: E402
from tests.serving.helpers import probe_records, publishing_trainer, reference_scores  # noqa: E402

RECORDS = probe_records(24, seed=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond, timeout: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_two_servers_follow_by_push_and_score_as_the_trainer(tmp_path: Path) -> None:
    servers = [serve_push(Replica()) for _ in range(2)]
    push = PushTransport([s.address for s, _ in servers])
    tr, pub = publishing_trainer(tmp_path / "unused", n_records=5000)
    pub.transport = push
    try:
        tr.run()
        assert push.flush()
        ref = reference_scores(tr, RECORDS)
        for _, receiver in servers:
            r = receiver.replica
            assert r.version == pub.version and r.snapshots_loaded == 1
            np.testing.assert_array_equal(r.predict_records(RECORDS).scores, ref)
            assert receiver.gaps == 0 and receiver.errors == 0
        assert all(s["failures"] == 0 and s["acked"] == pub.version for s in push.stats())
    finally:
        push.close()
        for s, _ in servers:
            s.stop()


def test_a_late_server_gets_a_snapshot_then_deltas(tmp_path: Path) -> None:
    port = _free_port()
    push = PushTransport([f"127.0.0.1:{port}"], retry_interval=0.2, timeout=2.0)
    tr, pub = publishing_trainer(tmp_path / "unused", n_records=3_000_000, sync_interval=0.05)
    pub.transport = push
    trainer = threading.Thread(target=tr.run)
    trainer.start()
    server = None
    try:
        assert _wait(lambda: pub.version >= 5 and push.stats()[0]["failures"] > 0)
        server, receiver = serve_push(Replica(), port=port)
        assert _wait(lambda: receiver.replica.ready and receiver.replica.version > 5)
        caught_up_at = receiver.replica.version
        assert _wait(lambda: receiver.replica.version >= caught_up_at + 5)
        tr.request_stop("test")
        trainer.join(timeout=60)
        assert push.flush() and _wait(lambda: receiver.replica.version == pub.version)
        assert receiver.replica.snapshots_loaded == 1  # one snapshot, then deltas only
        np.testing.assert_array_equal(receiver.replica.predict_records(RECORDS).scores,
                                      reference_scores(tr, RECORDS))
    finally:
        tr.request_stop("test")
        trainer.join(timeout=60)
        push.close()
        if server is not None:
            server.stop()


def test_receiver_answers_gaps_and_garbage_without_failing(tmp_path: Path) -> None:
    versions = []
    tr, _ = publishing_trainer(tmp_path, n_records=2000, on_publish=versions.append)
    tr.run()
    receiver = PushReceiver(Replica())
    assert json.loads(receiver.apply(b"not a version"))["status"] == "error"
    assert json.loads(receiver.apply(versions[1].to_bytes()))["status"] == "gap"
    assert json.loads(receiver.apply(versions[0].to_bytes())) == {
        "status": "ok", "version": 1, "message": ""}
    assert json.loads(receiver.status()) == {"ready": True, "version": 1,
                                             "lineage": versions[0].lineage}
    assert receiver.gaps == 1 and receiver.errors == 1


def test_fanout_publishes_to_a_directory_and_a_server(tmp_path: Path) -> None:
    server, receiver = serve_push(Replica())
    push = PushTransport([server.address])
    tr, pub = publishing_trainer(tmp_path, n_records=3000)
    pub.transport = FanoutTransport([pub.transport, push])
    try:
        tr.run()
        assert push.flush()
        follower_replica = Replica()
        DirectoryFollower(follower_replica, tmp_path).poll()
        assert follower_replica.version == receiver.replica.version == pub.version
        probe = PushTransport([server.address])
        assert probe.latest_version() == pub.version
        probe.close()
    finally:
        push.close()
        server.stop()
