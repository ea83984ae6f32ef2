"""The HTTP API over ASGI (no sockets): shapes, validation (422), size limits (413), metrics."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette's TestClient prefers "httpx2"; httpx works
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

from kraken.serving import DirectoryFollower, Replica, create_app
from tests.serving.helpers import probe_records, publishing_trainer


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Replica:
    model_dir = tmp_path_factory.mktemp("model")
    tr, _ = publishing_trainer(model_dir, n_records=3000)
    tr.run()
    r = Replica()
    DirectoryFollower(r, model_dir).poll()
    return r


@pytest.fixture()
def client(replica: Replica) -> TestClient:
    return TestClient(create_app(replica, max_body_bytes=20_000, max_instances=50))


def _post(client: TestClient, body: Any) -> Any:
    return client.post("/v1/predict", json=body)


def test_health_readiness_and_not_ready_predictions() -> None:
    c = TestClient(create_app(Replica()))
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert _post(c, {"instances": [{"c0": 1}]}).status_code == 503
    assert c.get("/v1/model").json()["ready"] is False
    assert "kraken_serving_ready 0.0" in c.get("/metrics").text


def test_instances_and_ranking_give_the_replicas_scores(client: TestClient,
                                                        replica: Replica) -> None:
    recs = probe_records(5)
    r = _post(client, {"instances": recs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == replica.version and body["model"] == "deepfm"
    np.testing.assert_array_equal(np.float32(body["scores"]),
                                  replica.predict_records(recs).scores)
    context = {"c0": 11, "d0": 0.25}
    cands = [{k: v for k, v in rec.items() if k not in context} for rec in recs]
    ranked = _post(client, {"context": context, "candidates": cands}).json()
    merged = [{**context, **c} for c in cands]
    np.testing.assert_array_equal(np.float32(ranked["scores"]),
                                  replica.predict_records(merged).scores)
    assert client.get("/readyz").json() == {"ready": True, "version": replica.version,
                                            "reason": ""}


@pytest.mark.parametrize(("body", "loc"), [
    ({"instances": [{"c0": 1}, {"zzz": 1}]}, ["body", "instances", 1, "zzz"]),
    ({"instances": [{"d1": "x"}]}, ["body", "instances", 0, "d1"]),
    ({"instances": [{"c2": 1.5}]}, ["body", "instances", 0, "c2"]),
    ({"instances": [{"c2": 2**70}]}, ["body", "instances", 0, "c2"]),
    ({"context": {"c0": "a"}, "candidates": [{"c1": 1}, {"c1": 2}]}, ["body", "context", "c0"]),
    ({"context": {"c0": 1}, "candidates": [{"c0": 2}]}, ["body", "candidates", 0, "c0"]),
    ({"instances": [{"c0": {"nested": 1}}]}, ["body", "instances", 0, "c0"]),
    ({"instances": [{"c0": "x" * 2000}]}, ["body", "instances", 0, "c0"]),
    ({"instances": [], "candidates": [{}]}, ["body"]),
    ({"instances": []}, ["body"]),
    ({"context": {"c0": 1}, "instances": [{}]}, ["body"]),
    ({"instance": [{}]}, ["body", "instance"]),
    ([1, 2], ["body"]),
])
def test_bad_requests_are_422_naming_the_field(client: TestClient, body: Any,
                                               loc: list[Any]) -> None:
    r = _post(client, body)
    assert r.status_code == 422, r.text
    locs = [d["loc"][: len(loc)] for d in r.json()["detail"]]
    assert loc in locs, locs


def test_malformed_json_and_non_finite_numbers_are_422(client: TestClient) -> None:
    for raw in (b"{", b'{"instances": [{"d0": NaN}]}', b'{"instances": [{"d0": 1e999}]}',
                b"\xff\xfe"):
        r = client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (raw, r.text)


def test_oversized_requests_are_413(client: TestClient) -> None:
    many = {"instances": [{"c0": 1}] * 51}
    r = _post(client, many)
    assert r.status_code == 413 and "limit is 50" in r.json()["detail"]
    big = {"instances": [{"c0": "y" * 900} for _ in range(30)]}
    assert _post(client, big).status_code == 413
    chunks = (json.dumps(big)[i:i + 1000].encode() for i in range(0, 40_000, 1000))
    r = client.post("/v1/predict", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/predict", content=b"{}", headers={"Content-Length": "nope"})
    assert r.status_code == 400


def test_model_info_and_metrics(client: TestClient, replica: Replica) -> None:
    info = client.get("/v1/model").json()
    assert info["version"] == replica.version and info["ready"]
    assert info["tables"]["emb"]["dim"] == 8 and info["tables"]["emb"]["rows"] > 0
    assert info["lag_s"] >= 0 and 0 <= info["sync_delay_s"] < 60
    assert info["features"]["fields"] == ["c0", "c1", "c2", "c3", "c4"]
    assert info["history"][-1][0] == replica.version
    _post(client, {"instances": [{"c0": 1}]})
    _post(client, {"instances": [{"nope": 1}]})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    for needle in ('kraken_http_requests_total{method="POST",route="/v1/predict",status="200"}',
                   'route="/v1/predict",status="422"', 'route="other",status="404"',
                   "kraken_http_request_duration_seconds_bucket",
                   f"kraken_serving_version {float(replica.version)}",
                   'kraken_serving_rows{table="emb"}', "kraken_serving_lag_seconds",
                   "kraken_serving_versions_applied_total", "kraken_serving_scored_total"):
        assert needle in text, needle
    spec = client.get("/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and "PredictRequest" in json.dumps(spec)


def test_consumer_lag_of_a_trainer_beside_the_server_is_exported(replica: Replica) -> None:
    lag = {"entries": 1234.0, "seconds": 2.5}
    text = TestClient(create_app(replica, sync_status=lambda: {"consumer_lag": lag})
                      ).get("/metrics").text
    assert "kraken_consumer_lag_entries 1234.0" in text
    assert "kraken_consumer_lag_seconds 2.5" in text
    plain = TestClient(create_app(replica)).get("/metrics").text
    assert "kraken_consumer_lag" not in plain


def test_the_app_factory_is_light_on_dependencies(tmp_path: Path) -> None:
    import kraken.serving

    assert callable(kraken.serving.create_app)


def test_listening_socket_gives_nodelay_connections() -> None:
    import socket

    from kraken.serving.http import bind

    sock = bind()
    try:
        # asyncio turns TCP_NODELAY on for accepted connections only on IPPROTO_TCP
        # sockets; without it every keep-alive response waited 40 ms for a delayed ACK
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
