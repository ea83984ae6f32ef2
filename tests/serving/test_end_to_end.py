"""End to end: a server follows the model directory while the trainer keeps learning.

The trainer publishes every 0.2 s (dense weights in every version) and records, for each
version, what its own model scores on a fixed set of requests. A client thread keeps
sending those requests over HTTP meanwhile. Every response must carry a version that never
goes backwards and scores equal to the trainer's for that version; the scores must change
as the trainer learns; at the end the server reaches the trainer's last version.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np

from kraken.serving import DirectoryFollower, ModelVersion, Replica, create_app
from kraken.serving.http import HttpServer
from tests.serving.helpers import probe_records, publishing_trainer, reference_scores

RECORDS = probe_records(32, seed=7)


def test_server_follows_training_with_consistent_versions(tmp_path: Path) -> None:
    replica = Replica()
    follower = DirectoryFollower(replica, tmp_path, poll_interval=0.02).start()
    server = HttpServer(create_app(replica)).start()
    refs: dict[int, np.ndarray] = {}

    def on_publish(v: ModelVersion) -> None:
        refs[v.version] = reference_scores(tr, RECORDS)

    tr, pub = publishing_trainer(tmp_path, sync_interval=0.2, dense_sync_interval=0.0,
                                 on_publish=on_publish, n_records=40_000)
    responses: list[tuple[int, np.ndarray]] = []
    training = threading.Event()
    training.set()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(3000):  # bounded
                r = c.post("/v1/predict", json={"instances": RECORDS})
                if r.status_code == 503:
                    time.sleep(0.01)
                    continue
                assert r.status_code == 200, r.text
                body = r.json()
                responses.append((body["version"], np.float32(body["scores"])))
                if not training.is_set():
                    return

    t = threading.Thread(target=client)
    try:
        t.start()
        tr.run()
        assert follower.wait_for(pub.version, timeout=10)
        training.clear()
        t.join(timeout=30)
        with httpx.Client(base_url=server.url, timeout=10) as c:
            final = c.post("/v1/predict", json={"instances": RECORDS}).json()
            info = c.get("/v1/model").json()
    finally:
        training.clear()
        server.stop()
        follower.stop()
    assert not t.is_alive()
    versions = [v for v, _ in responses]
    assert versions == sorted(versions), "a response went back to an older version"
    assert len(set(versions)) >= 3, f"too few versions seen while training: {set(versions)}"
    for v, scores in responses:
        np.testing.assert_array_equal(scores, refs[v], err_msg=f"version {v}")
    assert np.abs(responses[-1][1] - responses[0][1]).max() > 1e-3  # it learned
    assert final["version"] == pub.version
    np.testing.assert_array_equal(np.float32(final["scores"]), reference_scores(tr, RECORDS))
    assert info["version"] == pub.version and info["sync"] == {}
    assert follower.gaps == 0 and follower.errors == 0
    history = [v for v, _, _ in info["history"]]
    assert history == sorted(set(history)) and history[-1] == pub.version, history
