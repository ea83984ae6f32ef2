"""``kraken ps --publish`` shard processes, ``kraken train --rows-from-shards`` and
``kraken serve --follow``, as a user runs them: the server follows every shard's rows."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np

from kraken.ps.client import RemoteShard
from kraken.serving import DirectoryFollower, Replica
from kraken.serving.directory import read_layout, scan_versions, shard_dir
from tests.conftest import ROOT
from tests.ps.cluster import KRAKEN, Cluster


def _newest(folder: Path) -> int:
    deltas, snapshots = scan_versions(folder)
    return max([0, *deltas, *snapshots])


def test_shards_publish_rows_and_serve_follows_them(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nsource = "synthetic"\nn_records = 6000\nn_fields = 3\nn_dense = 2\n'
                   '[model]\nname = "fm"\n[tables.emb]\ndim = 4\ncapacity = 20000\n'
                   '[trainer]\nbatch_size = 512\n')
    model_dir = tmp_path / "model"
    cluster = Cluster(cfg, 2, extra=["--publish", str(model_dir), "--sync-interval", "0.1"])
    server = None
    try:
        server = subprocess.Popen([*KRAKEN, "serve", "--model-dir", str(model_dir), "--follow",
                                   "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = server.stdout.readline() if server.stdout else ""
        assert "following" in line, (line, server.stderr)
        url = line.split()[2]
        out = subprocess.run([*KRAKEN, "train", "--config", str(cfg), "--run-dir",
                              str(tmp_path / "run"), "--ps-shards", ",".join(cluster.addresses),
                              "--publish", str(model_dir), "--rows-from-shards",
                              "--dense-sync-interval", "0.2"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stdout + out.stderr
        held = []  # what the shards hold now that training is over
        for i, address in enumerate(cluster.addresses):
            shard = RemoteShard(address, index=i)
            try:
                held.append(shard.snapshot("emb"))
            finally:
                shard.close()
        cluster.stop()  # each shard publishes its last rows as it stops
        assert all(p.returncode == 0 for p in cluster.procs), cluster.logs
        assert read_layout(model_dir) == 2
        dense = _newest(model_dir)
        rows = [_newest(shard_dir(model_dir, i)) for i in range(2)]
        assert dense > 1 and min(rows) > 1
        deadline = time.monotonic() + 60
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        while ([s["version"] for s in info["shards"]], info["version"]) != (rows, dense) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
            info = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert [s["version"] for s in info["shards"]] == rows and info["version"] == dense, info
        assert all(s["lag_s"] >= 0 for s in info["shards"]) and info["tables"]["emb"]["rows"] > 0
        r = httpx.post(f"{url}/v1/predict", timeout=10,
                       json={"instances": [{"c0": 5, "c1": 1, "d0": 1.0}, {"c2": 3}]})
        body = r.json()
        assert r.status_code == 200 and len(body["scores"]) == 2, r.text
        assert body["shard_versions"] == rows and body["version"] == dense
    finally:
        cluster.stop()
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    assert server.returncode == 0
    # what the server followed is what the shards held at the end, row for row
    replica = Replica()
    DirectoryFollower(replica, model_dir).poll()
    assert replica.shard_versions == tuple(rows)
    keys = np.concatenate([d.keys for d in held])
    assert all(d.keys.size > 0 for d in held) and keys.size == info["tables"]["emb"]["rows"]
    assert sorted(replica.keys("emb").tolist()) == sorted(keys.tolist())
    np.testing.assert_array_equal(replica.lookup("emb", keys),
                                  np.concatenate([d.weights for d in held]))
