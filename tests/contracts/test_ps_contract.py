"""The parameter-server contract (``kraken/ps/protocol.py``), run over every implementation.

- ``local``: :class:`LocalPS`, one in-process shard;
- ``local-background``: the same with ``background_push`` (pushes applied on a thread,
  every later call waits for them: no call may see a difference);
- ``sharded``: :class:`ShardedPS` over 3 in-process shards (routing, fan-out, reassembly);
- ``grpc``: :class:`ShardedPS` over 2 real ``kraken ps`` processes on loopback.

A reference for the rows is one plain :class:`SparseTable` per table: with admission
``Always`` and enough capacity, sharding must not change a single bit of any row.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    DTypeError,
    InputError,
    ShapeError,
)
from kraken.optim import SGD, RowWiseAdaGrad
from kraken.ps import LocalPS, ParameterServer, Router, Shard, ShardedPS, shard_configs
from kraken.table import TTL, CountMin, SparseTable, TableConfig, Zeros
from tests.ps.cluster import Cluster, write_run_config

IMPLS = ["local", "local-background", "sharded", "grpc"]

MakePS = Callable[..., ShardedPS]


def _tables(optimizer=None, **kw) -> dict[str, TableConfig]:
    opt = optimizer or RowWiseAdaGrad(lr=0.1)
    return {"emb": TableConfig(dim=8, capacity=100_000, optimizer=opt, **kw),
            "wide": TableConfig(dim=1, capacity=100_000, optimizer=SGD(lr=0.5),
                                initializer=Zeros(), **kw)}


@pytest.fixture(params=IMPLS)
def make_ps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakePS]:
    opened: list[ShardedPS] = []
    clusters: list[Cluster] = []

    def make(tables: dict[str, TableConfig] | None = None, *, evict_every: int = 10,
             push_staleness: int = 0) -> ShardedPS:
        tables = tables or _tables()
        if request.param.startswith("local"):
            ps: ShardedPS = LocalPS(tables, evict_every=evict_every,
                                    background_push=request.param == "local-background")
        elif request.param == "sharded":
            ps = ShardedPS.in_process(tables, 3, evict_every=evict_every,
                                      push_staleness=push_staleness)
        else:
            from kraken.ps.client import RemoteShard

            cfg = write_run_config(tmp_path / f"run{len(clusters)}.toml", tables,
                                   ps={"evict_every": evict_every})
            cluster = Cluster(cfg, 2)
            clusters.append(cluster)
            ps = ShardedPS([RemoteShard(a, index=i, retries=1, backoff=0.05)
                            for i, a in enumerate(cluster.addresses)], Router.uniform(2),
                           push_staleness=push_staleness)
        opened.append(ps)
        return ps

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for ps in opened:
        ps.close()
    for c in clusters:
        c.stop()


def _keys(rng: np.random.Generator, n: int, hi: int = 5000) -> np.ndarray:
    return np.unique(rng.integers(0, hi, n).astype(np.int64) * 7919 - (1 << 40))


def test_is_a_parameter_server(make_ps: MakePS) -> None:
    ps = make_ps()
    assert isinstance(ps, ParameterServer)
    assert ps.n_shards == {"local": 1, "local-background": 1, "sharded": 3,
                           "grpc": 2}[make_ps.kind]
    assert {n: c.dim for n, c in ps.tables.items()} == {"emb": 8, "wide": 1}
    assert ps.tables["emb"].capacity >= 100_000


def test_rows_equal_one_plain_table(make_ps: MakePS) -> None:
    """Pull (admitting), push, pull again: bit for bit what one SparseTable per table gives."""
    tables = _tables()
    ps = make_ps(tables)
    ref = {n: SparseTable(c) for n, c in tables.items()}
    rng = np.random.default_rng(0)
    for step in range(1, 6):
        k = _keys(rng, 300)
        got = ps.pull({"emb": k, "wide": k}, train=True, now=step)
        for n in tables:
            np.testing.assert_array_equal(got[n], ref[n].lookup(k, train=True, now=step))
        grads = {n: (k, rng.normal(size=(k.shape[0], c.dim)).astype(np.float32))
                 for n, c in tables.items()}
        ps.push(grads, now=step)
        for n, (gk, g) in grads.items():
            ref[n].apply_gradients(gk, g, step)
    k = _keys(rng, 800)
    got = ps.pull({"emb": k, "wide": k})
    for n in tables:
        np.testing.assert_array_equal(got[n], ref[n].lookup(k))
    stats = ps.stats()
    assert stats["emb"].live_rows == len(ref["emb"])
    assert stats["emb"].admitted == ref["emb"].stats().admitted


@settings(max_examples=8)
@given(ops=st.lists(st.tuples(st.booleans(), st.lists(st.integers(-(1 << 62), 1 << 62),
                                                      min_size=0, max_size=40)),
                    min_size=1, max_size=6))
def test_any_sequence_matches_reference(ops: list[tuple[bool, list[int]]]) -> None:
    """Property over the in-process implementations (the gRPC one shares their shard code)."""
    tables = _tables()
    for ps in (LocalPS(tables), ShardedPS.in_process(tables, 4, buckets=64)):
        ref = {n: SparseTable(c) for n, c in tables.items()}
        with ps:
            for step, (is_push, raw) in enumerate(ops, 1):
                k = np.array(raw, dtype=np.int64)
                if is_push:
                    g = {n: (k, np.full((k.shape[0], c.dim), 0.25, np.float32))
                         for n, c in tables.items()}
                    ps.push(g, now=step)
                    for n, (gk, gv) in g.items():
                        ref[n].apply_gradients(gk, gv, step)
                else:
                    got = ps.pull({"emb": k, "wide": k}, train=True, now=step)
                    for n in tables:
                        np.testing.assert_array_equal(got[n],
                                                      ref[n].lookup(k, train=True, now=step))


def test_pull_without_train_changes_nothing(make_ps: MakePS) -> None:
    ps = make_ps()
    k = np.arange(100, dtype=np.int64)
    before = ps.stats()
    rows = ps.pull({"emb": k})
    np.testing.assert_array_equal(rows["emb"], np.zeros((100, 8), np.float32))
    after = ps.stats()
    assert after["emb"].live_rows == before["emb"].live_rows == 0
    assert after["emb"].admitted == 0


def test_concurrent_pushes_all_land(make_ps: MakePS) -> None:
    """Four writers push the same rows at once: every gradient reaches every row."""
    tables = _tables(optimizer=SGD(lr=0.5))
    ps = make_ps(tables)
    k = np.arange(0, 2000, 7, dtype=np.int64)
    w0 = ps.pull({"emb": k}, train=True, now=1)["emb"]
    writers, rounds = 4, 5
    errors: list[BaseException] = []

    def another_client() -> ShardedPS:
        """A second worker: its own client (and, over gRPC, its own connections)."""
        if make_ps.kind != "grpc":
            return ShardedPS(ps.endpoints, ps.router)
        from kraken.ps.client import RemoteShard

        return ShardedPS([RemoteShard(e.address, index=i)  # type: ignore[attr-defined]
                          for i, e in enumerate(ps.endpoints)], ps.router)

    def work(client: ShardedPS) -> None:
        try:
            for _ in range(rounds):
                client.push({"emb": (k, np.ones((k.shape[0], 8), np.float32))}, now=2)
            client.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    clients = [ps] + [another_client() for _ in range(writers - 1)]
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    w = ps.pull({"emb": k})["emb"]
    expect = w0.copy()
    for _ in range(writers * rounds):
        expect -= np.float32(0.5) * np.float32(1.0)
    np.testing.assert_array_equal(w, expect)


def test_retried_requests_apply_once(make_ps: MakePS) -> None:
    """The same request id twice (a retry after a lost reply) is executed once per shard."""
    ps = make_ps(_tables(optimizer=SGD(lr=0.5)))
    k = np.arange(64, dtype=np.int64)
    # route each shard its own keys, as the client would
    order, bounds = ps.router.partition(k)
    parts = [k[order[bounds[i]:bounds[i + 1]]] for i in range(ps.n_shards)]
    for i, e in enumerate(ps.endpoints):
        first = e.pull({"emb": parts[i]}, train=True, now=1, request_id="retry-pull")
        again = e.pull({"emb": parts[i]}, train=True, now=1, request_id="retry-pull")
        np.testing.assert_array_equal(first["emb"], again["emb"])
    s = ps.stats()["emb"]
    assert s.train_lookups == 64 and s.admitted == 64
    w0 = ps.pull({"emb": k})["emb"]
    for i, e in enumerate(ps.endpoints):
        g = np.ones((parts[i].shape[0], 8), np.float32)
        e.push({"emb": (parts[i], g)}, 2, request_id="retry-push")
        e.push({"emb": (parts[i], g)}, 2, request_id="retry-push")
    np.testing.assert_array_equal(ps.pull({"emb": k})["emb"], w0 - np.float32(0.5))
    assert ps.stats()["emb"].updated_rows == 64


def test_bad_push_changes_nothing(make_ps: MakePS) -> None:
    ps = make_ps()
    k = np.arange(50, dtype=np.int64)
    ps.pull({"emb": k, "wide": k}, train=True, now=1)
    before = ps.pull({"emb": k, "wide": k})
    good = np.ones((50, 8), np.float32)
    with pytest.raises(InputError, match="unknown table"):
        ps.push({"emb": (k, good), "nope": (k, good)}, now=2)
    with pytest.raises(ShapeError):
        ps.push({"emb": (k, good), "wide": (k, np.ones((50, 3), np.float32))}, now=2)
    with pytest.raises(DTypeError):
        ps.push({"emb": (k, good), "wide": (k, np.ones((50, 1), np.float64))}, now=2)
    after = ps.pull({"emb": k, "wide": k})
    for n in before:
        np.testing.assert_array_equal(after[n], before[n])
    ps.push({"emb": (k, good)}, now=3)  # still serving
    assert ps.stats()["emb"].updated_rows == 50


def test_shards_evict_on_their_own_clock(make_ps: MakePS) -> None:
    """TTL eviction runs inside the shards every `evict_every` pushes; nobody calls evict."""
    tables = _tables(eviction=(TTL(ttl=10),))
    ps = make_ps(tables, evict_every=1)
    old = np.arange(0, 300, dtype=np.int64)
    new = np.arange(1000, 1300, dtype=np.int64)
    ps.pull({"emb": old}, train=True, now=1)
    ps.push({"emb": (old, np.zeros((300, 8), np.float32))}, now=1)
    assert ps.stats()["emb"].live_rows == 300
    ps.pull({"emb": new}, train=True, now=100)
    ps.push({"emb": (new, np.zeros((300, 8), np.float32))}, now=100)
    s = ps.stats()["emb"]
    assert s.evicted == 300 and s.live_rows == 300
    assert not ps.pull({"emb": old})["emb"].any()


def test_admission_counts_per_key(make_ps: MakePS) -> None:
    ps = make_ps(_tables(admission=CountMin(threshold=2, width=1 << 14)))
    k = np.arange(0, 500, dtype=np.int64) * 13
    ps.pull({"emb": k}, train=True, now=1)
    assert ps.stats()["emb"].live_rows == 0
    ps.pull({"emb": k}, train=True, now=2)
    assert ps.stats()["emb"].live_rows == 500


def test_version_vector_deltas(make_ps: MakePS) -> None:
    ps = make_ps()
    k = np.arange(400, dtype=np.int64)
    ps.pull({"emb": k}, train=True, now=1)
    snap = ps.snapshot("emb")
    assert len(snap) == ps.n_shards
    assert sorted(np.concatenate([d.keys for d in snap]).tolist()) == k.tolist()
    cursor = [d.version for d in snap]
    assert all(d.keys.shape[0] == 0 for d in ps.delta("emb", cursor))
    touched = k[::10]
    ps.push({"emb": (touched, np.ones((touched.shape[0], 8), np.float32))}, now=2)
    deltas = ps.delta("emb", cursor)
    assert sorted(np.concatenate([d.keys for d in deltas]).tolist()) == touched.tolist()
    rows = ps.pull({"emb": touched})["emb"]
    for d in deltas:
        if d.keys.size:
            np.testing.assert_array_equal(d.weights, rows[np.searchsorted(touched, d.keys)])
    with pytest.raises(InputError, match="one version per shard"):
        ps.delta("emb", cursor + [0])


def test_checkpoint_round_trip_and_resharding(make_ps: MakePS, tmp_path: Path) -> None:
    """Save from this implementation, load onto 1, 2 and 3 shards: same rows and same
    optimizer state (the next identical push gives identical rows)."""
    tables = _tables()
    ps = make_ps(tables)
    rng = np.random.default_rng(3)
    k = _keys(rng, 2000, hi=100_000)
    for step in (1, 2):
        ps.pull({"emb": k, "wide": k}, train=True, now=step)
        ps.push({"emb": (k, rng.normal(size=(k.shape[0], 8)).astype(np.float32))}, now=step)
    layout = ps.save(tmp_path / "ckpt")
    assert len(layout["shards"]) == ps.n_shards
    for s in layout["shards"]:
        assert all(f["bytes"] > 0 and isinstance(f["crc32"], int) for f in s["files"].values())
    g = rng.normal(size=(k.shape[0], 8)).astype(np.float32)
    ps.push({"emb": (k, g)}, now=3)
    want = ps.pull({"emb": k, "wide": k})
    for n_shards in (1, 2, 3):
        other = ShardedPS.in_process(tables, n_shards)
        other.load(tmp_path / "ckpt", layout, checkpoint="c1")
        assert other.stats()["emb"].live_rows == k.shape[0]
        other.push({"emb": (k, g)}, now=3)
        got = other.pull({"emb": k, "wide": k})
        for n in want:
            np.testing.assert_array_equal(got[n], want[n])
        other.close()


def test_failed_shard_save_fails_the_checkpoint(tmp_path: Path) -> None:
    ps = ShardedPS.in_process(_tables(), 3)
    ps.pull({"emb": np.arange(100, dtype=np.int64)}, train=True, now=1)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "shard-00001").write_text("not a directory")
    with pytest.raises(CheckpointError, match="shard 1"):
        ps.save(tmp_path / "ckpt")


def test_handshake_refuses_mixed_checkpoints(tmp_path: Path) -> None:
    per = shard_configs(_tables(), 2)
    shards = [Shard(per, index=i, of=2) for i in range(2)]
    ShardedPS(shards, Router.uniform(2)).save(tmp_path / "a")
    shards[0].load([tmp_path / "a" / "shard-00000", tmp_path / "a" / "shard-00001"],
                   source_router=Router.uniform(2), router=Router.uniform(2),
                   checkpoint="ckpt-2")
    with pytest.raises(CheckpointMismatchError, match="mix two cuts"):
        ShardedPS(shards, Router.uniform(2))
    with pytest.raises(ConfigError, match="says it is shard 1 of 2, expected 0 of 2"):
        ShardedPS(list(reversed(shards)), Router.uniform(2))


def test_push_staleness_bounds_in_flight_pushes() -> None:
    tables = _tables(optimizer=SGD(lr=0.5))
    ps = ShardedPS.in_process(tables, 2, push_staleness=2)
    k = np.arange(100, dtype=np.int64)
    w0 = ps.pull({"emb": k}, train=True, now=1)["emb"]
    for _ in range(5):
        ps.push({"emb": (k, np.ones((100, 8), np.float32))}, now=2)
        assert ps.pending_pushes <= 2
    ps.flush()
    expect = w0.copy()
    for _ in range(5):
        expect -= np.float32(0.5)
    np.testing.assert_array_equal(ps.pull({"emb": k})["emb"], expect)
    ps.close()
    with pytest.raises(InputError, match="closed"):
        ps.pull({"emb": k})


def test_dataclass_configs_split_budget() -> None:
    per = shard_configs({"emb": TableConfig(dim=4, capacity=10)}, 3)
    assert per["emb"].capacity == 4
    assert dataclasses.replace(per["emb"], capacity=10) == TableConfig(dim=4, capacity=10)


def test_incremental_checkpoint_chain_restores_the_last_cut(make_ps: MakePS,
                                                            tmp_path: Path) -> None:
    """Full save, more training, incremental save (only touched rows), more training:
    restoring full + delta onto 1 or 3 shards gives exactly the state at the delta."""
    tables = _tables()
    ps = make_ps(tables)
    rng = np.random.default_rng(5)
    k = _keys(rng, 3000, hi=200_000)
    ps.pull({"emb": k, "wide": k}, train=True, now=1)
    full = ps.save(tmp_path / "full")
    touched = k[::20]
    ps.pull({"emb": touched}, train=True, now=2)
    ps.push({"emb": (touched, rng.normal(size=(touched.shape[0], 8)).astype(np.float32))},
            now=2)
    delta = ps.save(tmp_path / "delta", base=full)
    assert delta["incremental"] is True
    size = {name: sum(f["bytes"] for s in lay["shards"] for n, f in s["files"].items()
                      if n == "emb.ktab") for name, lay in (("full", full), ("delta", delta))}
    assert size["delta"] < size["full"] / 4  # 5% of the rows touched
    g = rng.normal(size=(k.shape[0], 8)).astype(np.float32)
    want_state = ps.pull({"emb": k, "wide": k})
    ps.push({"emb": (k, g)}, now=3)  # after the cut: must not be in the restore
    for n_shards in (1, 3):
        other = ShardedPS.in_process(tables, n_shards)
        other.load(tmp_path / "full", full, checkpoint="c2",
                   deltas=[(tmp_path / "delta", delta)])
        got = other.pull({"emb": k, "wide": k})
        for n in want_state:
            np.testing.assert_array_equal(got[n], want_state[n])
        other.close()
