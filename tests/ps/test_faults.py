"""Shard failures, as they happen: real ``kraken ps`` processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kraken.errors import TransportError
from kraken.optim import RowWiseAdaGrad
from kraken.ps import Router, ShardedPS
from kraken.ps.client import RemoteShard
from kraken.table import TableConfig, Zeros
from tests.ps.cluster import ROOT, Cluster, shards_of, write_run_config

KRAKEN = [sys.executable, "-m", "kraken.cli.main"]
TABLES = {"emb": TableConfig(dim=4, capacity=50_000, optimizer=RowWiseAdaGrad(lr=0.1)),
          "wide": TableConfig(dim=1, capacity=50_000, initializer=Zeros())}


def _client(cluster: Cluster) -> ShardedPS:
    return ShardedPS([RemoteShard(a, index=i, retries=2, backoff=0.05, timeout=5.0)
                      for i, a in enumerate(cluster.addresses)], Router.uniform(2))


def test_a_killed_shard_fails_calls_with_its_name_and_address(tmp_path: Path) -> None:
    cfg = write_run_config(tmp_path / "run.toml", TABLES)
    with Cluster(cfg, 2) as cluster, _client(cluster) as ps:
        keys = np.arange(1000, dtype=np.int64)
        ps.pull({"emb": keys}, train=True, now=1)
        cluster.kill(1)
        with pytest.raises(TransportError, match=f"shard 1 at {cluster.addresses[1]}.*3 attempt"):
            ps.pull({"emb": keys}, train=True, now=2)
        # the live shard still answers for its own keys
        own = keys[ps.router.shard_of(keys) == 0]
        assert ps.endpoints[0].pull({"emb": own})["emb"].shape == (own.shape[0], 4)


def test_a_restarted_shard_is_noticed_not_silently_used_empty(tmp_path: Path) -> None:
    cfg = write_run_config(tmp_path / "run.toml", TABLES)
    with Cluster(cfg, 2) as cluster, _client(cluster) as ps:
        keys = np.arange(1000, dtype=np.int64)
        ps.pull({"emb": keys}, train=True, now=1)
        cluster.kill(0)
        cluster.restart(0)  # same address, fresh state
        with pytest.raises(TransportError, match="shard 0 .* restarted and lost its state"):
            ps.pull({"emb": keys}, train=True, now=2)


def _launch_config(tmp_path: Path, n_records: int, every: int) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[data]
source = "synthetic"
n_records = {n_records}
n_fields = 4
vocab = 5000

[model]
name = "fm"

[tables.emb]
dim = 8
capacity = 20000
optimizer = {{ type = "rowwise_adagrad", lr = 0.05 }}

[trainer]
batch_size = 500
window = 5000
checkpoint_every_samples = {every}
log_every_s = 0.5

[ps]
evict_every = 5
""")
    return cfg


def test_launch_restarts_after_a_shard_is_killed_and_finishes_the_stream(tmp_path: Path
                                                                          ) -> None:
    """The drill: SIGKILL one shard mid-run; `kraken launch` restarts shards and trainer
    from the last complete checkpoint; the run ends with every record of the stream
    trained, and only the records after that checkpoint trained twice."""
    n, every = 60_000, 10_000
    cfg, run_dir = _launch_config(tmp_path, n, every), tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*KRAKEN, "launch", "--config", str(cfg), "--shards", "2",
                             "--run-dir", str(run_dir), "--max-restarts", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "checkpoints" / "LATEST").is_file():
                shards = shards_of(run_dir)
                if shards:
                    shards[-1].send_signal(signal.SIGKILL)
                    killed.append(shards[-1].pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        killer.join()
    assert killed, "no shard was killed (training ended before the first checkpoint?)"
    assert proc.returncode == 0, err[-3000:]
    assert "restart 1/2 from the last complete checkpoint" in err
    resumed = int(out.split("resumed at ")[1].split(" samples")[0].replace(",", ""))
    assert resumed > 0 and resumed % every < 500  # a checkpoint cut, on a batch boundary
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["kind"] == "final" and final["samples"] == n
    assert not shards_of(run_dir), "shards outlived the launch"


def test_launch_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    cfg, run_dir = _launch_config(tmp_path, 2_000_000, 50_000), tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*KRAKEN, "launch", "--config", str(cfg), "--shards", "2",
                             "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in out and "signal SIG" in out
    assert (run_dir / "checkpoints" / "LATEST").is_file()  # a final checkpoint on the way out
    assert not shards_of(run_dir)
