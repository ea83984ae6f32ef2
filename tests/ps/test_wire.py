"""Large payloads over gRPC: a 51 MB pull and a 51 MB push against a real shard process.

gRPC refuses messages over 4 MiB by default; :mod:`kraken.ps.wire` lifts the limit on
both ends. The rows that come back must be bit for bit those of an in-process
:class:`Shard` of the same configuration given the same calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc")

from kraken.optim import SGD  # noqa: E402
from kraken.ps import Shard, shard_configs  # noqa: E402
from kraken.ps.client import RemoteShard  # noqa: E402
from kraken.table import TableConfig  # noqa: E402
from tests.ps.cluster import Cluster, write_run_config  # noqa: E402

N, DIM = 200_000, 64  # 200k rows x 64 float32 = 51.2 MB each way


def test_a_50_mb_pull_and_push_over_grpc(tmp_path: Path) -> None:
    tables = {"emb": TableConfig(dim=DIM, capacity=N + 1000, optimizer=SGD(lr=0.25))}
    reference = Shard(shard_configs(tables, 1))
    rng = np.random.default_rng(3)
    keys = rng.choice(1 << 40, size=N, replace=False).astype(np.int64) - (1 << 39)
    grads = rng.standard_normal((N, DIM)).astype(np.float32)
    assert grads.nbytes > 50e6
    cfg = write_run_config(tmp_path / "run.toml", tables)
    with Cluster(cfg, 1) as cluster:
        remote = RemoteShard(cluster.addresses[0], index=0, retries=0, timeout=120)
        try:
            rows = remote.pull({"emb": keys}, train=True, now=1)["emb"]
            assert rows.shape == (N, DIM) and rows.dtype == np.float32
            np.testing.assert_array_equal(
                rows, reference.pull({"emb": keys}, train=True, now=1)["emb"])
            remote.push({"emb": (keys, grads)}, now=2)
            reference.push({"emb": (keys, grads)}, now=2)
            after = remote.pull({"emb": keys[::-1]})["emb"]
            np.testing.assert_array_equal(after, reference.pull({"emb": keys[::-1]})["emb"])
            assert not np.array_equal(after[::-1], rows)  # the push landed
            assert remote.stats()["emb"].live_rows == N
        finally:
            remote.close()
