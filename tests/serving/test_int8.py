"""A replica with int8 rows serves, over real HTTP, scores close to the fp32 replica's."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from kraken.serving import DirectoryFollower, Replica, create_app
from kraken.serving.http import HttpServer
from kraken.serving.quant import dequantize_rows, quantize_rows
from tests.serving.helpers import probe_records, publishing_trainer

RECORDS = probe_records(64, seed=3)


def test_int8_replica_scores_close_to_fp32_over_http(tmp_path: Path) -> None:
    tr, _ = publishing_trainer(tmp_path, n_records=4000)
    tr.run()
    replicas = {p: Replica(precision=p) for p in ("fp32", "int8")}
    servers = {}
    try:
        for p, r in replicas.items():
            DirectoryFollower(r, tmp_path).poll()
            servers[p] = HttpServer(create_app(r)).start()
        scores, infos = {}, {}
        for p, server in servers.items():
            with httpx.Client(base_url=server.url, timeout=10) as c:
                resp = c.post("/v1/predict", json={"instances": RECORDS})
                assert resp.status_code == 200, resp.text
                scores[p] = np.float32(resp.json()["scores"])
                infos[p] = c.get("/v1/model").json()
    finally:
        for server in servers.values():
            server.stop()
    assert infos["int8"]["tables"]["emb"]["precision"] == "int8"
    assert infos["int8"]["tables"]["wide"]["precision"] == "fp16"  # dim 1: int8 is larger
    assert infos["int8"]["memory_bytes"] < infos["fp32"]["memory_bytes"]
    # the int8 replica holds exactly the quantized rows of the fp32 one
    keys = replicas["fp32"].keys("emb")
    exact = replicas["fp32"].lookup("emb", keys)
    np.testing.assert_array_equal(replicas["int8"].lookup("emb", keys),
                                  dequantize_rows(quantize_rows(exact)))
    diff = np.abs(scores["int8"] - scores["fp32"])
    assert diff.max() < 0.01 and diff.mean() < 0.002, (diff.max(), diff.mean())
    assert diff.max() > 0  # the int8 rows were used
