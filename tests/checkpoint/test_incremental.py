"""Incremental checkpoints against a reference: the table state recorded at each save.

Random training-like histories (training pulls that admit keys, pushes, eviction by the
shards' own cadence and explicitly, LFU decay) on an in-process sharded PS, with
checkpoints at random points under a ``full_every`` policy. Restoring any checkpoint,
full or incremental, onto the same shard count or another one, gives exactly the rows
(weights, optimizer state, ``last_seen``, ``count``, ``stamp``) recorded when it was
written; with the same shard count also every shard's clock, version and counters.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kraken
from kraken.checkpoint import CheckpointStore, Manifest
from kraken.ps import ShardedPS
from kraken.table import LFU, LRU, TTL, CountMin, TableConfig
from kraken.table.persistence import read_table_file

KEYS = 40
_FIELDS = ("keys", "weights", "state", "last_seen", "count", "stamp")
_COUNTERS = ("clock", "version", "lookups", "train_lookups", "admitted", "not_admitted",
             "rejected_full", "evicted", "updated_rows", "dropped_gradients")


def _tables(capacity: int = 64) -> dict[str, TableConfig]:
    return {"emb": TableConfig(dim=4, capacity=capacity, optimizer=kraken.RowWiseAdaGrad(),
                               admission=CountMin(threshold=2, width=64, depth=2),
                               eviction=(TTL(ttl=6), LFU(decay=0.5))),
            "wide": TableConfig(dim=1, capacity=capacity, optimizer=kraken.SGD(lr=0.5),
                                eviction=(LRU(),))}


def _rows(ps: ShardedPS) -> dict[str, dict[str, np.ndarray]]:
    """Every table's live rows over all shards, sorted by key."""
    out = {}
    for name in ps.tables:
        parts = [e._get(name).export() for e in ps.endpoints]  # type: ignore[attr-defined]
        cols = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS}
        order = np.argsort(cols["keys"])
        out[name] = {f: v[order] for f, v in cols.items()}
    return out


def _shard_stats(ps: ShardedPS) -> list[dict[str, dict[str, int]]]:
    return [{n: {c: getattr(s, c) for c in _COUNTERS} for n, s in per.items()}
            for per in ps.shard_stats()]


def _assert_rows_equal(got: dict, want: dict) -> None:
    for name in want:
        for f in _FIELDS:
            np.testing.assert_array_equal(got[name][f], want[name][f], err_msg=f"{name}.{f}")


_op = st.one_of(
    st.tuples(st.just("pull"), st.lists(st.integers(0, KEYS - 1), min_size=1, max_size=12)),
    st.tuples(st.just("push"), st.lists(st.integers(0, KEYS - 1), min_size=1, max_size=12)),
    st.tuples(st.just("evict"), st.just([])),
    st.tuples(st.just("ckpt"), st.just([])),
)


def _run(ps: ShardedPS, store: CheckpointStore, ops: list, seed: int
         ) -> list[tuple[Path, dict, list]]:
    """Apply ``ops``; returns (checkpoint, rows, shard stats) recorded at every save."""
    rng = np.random.default_rng(seed)
    saved, now = [], 0
    for step, (kind, keys) in enumerate(ops):
        now += int(rng.integers(0, 3))
        k = np.array(keys, dtype=np.int64)
        if kind == "pull":
            ps.pull({"emb": k, "wide": k}, train=True, now=now)
        elif kind == "push":
            k = np.unique(k)
            grads = {n: (k, rng.standard_normal((k.size, c.dim)).astype(np.float32))
                     for n, c in ps.tables.items()}
            ps.push(grads, now)
        elif kind == "evict":
            ps.evict(now)
        else:
            path = store.save(step=step, samples=step, stream_offset=step, ps=ps, parts={},
                              meta={})
            saved.append((path, _rows(ps), _shard_stats(ps)))
    return saved


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=40).map(lambda o: o + [("ckpt", [])]),
       shards=st.sampled_from([1, 2, 3]), restore_shards=st.sampled_from([1, 2, 4]),
       full_every=st.sampled_from([1, 2, 3, 100]), seed=st.integers(0, 2**16))
@example(ops=[("pull", [1, 2, 3])] * 2 + [("ckpt", []), ("pull", [1, 2, 3]), ("ckpt", [])],
         shards=1, restore_shards=2, full_every=3, seed=0)  # accesses alone change rows
@example(ops=[("pull", list(range(10)))] * 2 + [("ckpt", [])] + [("pull", [20, 21])] * 12
         + [("evict", []), ("ckpt", [])], shards=2, restore_shards=1, full_every=2, seed=0)
@example(ops=[("pull", [1, 2, 3])] * 3 + [("ckpt", []), ("evict", []), ("ckpt", [])],
         shards=1, restore_shards=1, full_every=3, seed=0)  # LFU decays every count
def test_every_checkpoint_restores_the_state_it_was_written_at(
        ops: list, shards: int, restore_shards: int, full_every: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = CheckpointStore(root, keep=100, full_every=full_every)
        with ShardedPS.in_process(_tables(), shards, evict_every=3) as ps:
            saved = _run(ps, store, ops, seed)
        chains = [Manifest.read(p).chain for p, _, _ in saved]
        # the policy: a full checkpoint, then full_every - 1 incremental ones
        assert [len(c) for c in chains] == [i % full_every for i in range(len(saved))]
        for path, rows, stats in saved:
            for m in {shards, restore_shards}:
                with ShardedPS.in_process(_tables(capacity=10_000), m) as back:
                    CheckpointStore(root).load_tables(path, back)
                    _assert_rows_equal(_rows(back), rows)
                    if m == shards:
                        assert _shard_stats(back) == stats


def test_training_continues_identically_after_restoring_a_chain(tmp_path: Path) -> None:
    ops = [("pull", list(range(0, 80, 3)))] * 2 + [("push", list(range(0, 80, 3))),
                                                   ("ckpt", []), ("pull", [1, 2, 3, 1, 2, 3]),
                                                   ("push", [3, 6, 9]), ("evict", []),
                                                   ("ckpt", [])]
    store = CheckpointStore(tmp_path, keep=5, full_every=10)
    a = ShardedPS.in_process(_tables(), 2)
    path, _, _ = _run(a, store, ops, seed=1)[-1]
    assert Manifest.read(path).incremental
    b = ShardedPS.in_process(_tables(), 2)
    CheckpointStore(tmp_path).load_tables(path, b)
    tail = [("pull", list(range(50, 110))) for _ in range(2)] + [("push", list(range(40, 90))),
                                                                 ("evict", [])]
    for ps in (a, b):
        _run(ps, CheckpointStore(tmp_path / "unused"), tail, seed=2)
    _assert_rows_equal(_rows(b), _rows(a))
    assert _shard_stats(b) == _shard_stats(a)
    a.close()
    b.close()


def test_an_incremental_checkpoint_holds_only_the_rows_touched(tmp_path: Path) -> None:
    n, k = 20_000, 100
    tables = {"emb": TableConfig(dim=16, capacity=n, optimizer=kraken.RowWiseAdaGrad())}
    store = CheckpointStore(tmp_path, keep=5, full_every=5)
    with ShardedPS.in_process(tables, 1) as ps:
        keys = np.arange(n, dtype=np.int64)
        ps.pull({"emb": keys}, train=True, now=1)
        full = store.save(step=1, samples=0, stream_offset=0, ps=ps, parts={}, meta={})
        touched = keys[::n // k]
        ps.push({"emb": (touched, np.ones((k, 16), np.float32))}, now=2)
        inc = store.save(step=2, samples=0, stream_offset=0, ps=ps, parts={}, meta={})
    assert Manifest.read(inc).chain == [full.name]
    table = "tables/shard-00000/emb.ktab"
    delta = read_table_file(inc / table)
    np.testing.assert_array_equal(np.sort(delta.rows.keys), touched)
    full_bytes, inc_bytes = (full / table).stat().st_size, (inc / table).stat().st_size
    assert inc_bytes < 3 * full_bytes * k / n  # in proportion to k, plus a small header


def _save(store: CheckpointStore, ps: ShardedPS, step: int) -> Path:
    ps.pull({"emb": np.array([step, step + 1]), "wide": np.array([step])}, train=True,
            now=step)
    return store.save(step=step, samples=0, stream_offset=0, ps=ps, parts={}, meta={})


def test_pruning_keeps_what_a_kept_checkpoint_builds_on(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1, full_every=3)
    with ShardedPS.in_process(_tables(), 2) as ps:
        c1, c2, c3 = (_save(store, ps, s) for s in (1, 2, 3))
        assert Manifest.read(c3).chain == [c1.name, c2.name]
        assert store.checkpoints() == [c1, c2, c3]
        assert store.intact() == [c1, c2, c3]
        c4 = _save(store, ps, 4)  # full again: the old chain goes
        assert Manifest.read(c4).chain == []
        assert store.checkpoints() == [c4]


def test_an_incremental_save_follows_the_checkpoint_restored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=10, full_every=5)
    with ShardedPS.in_process(_tables(), 2) as ps:
        c1, c2 = _save(store, ps, 1), _save(store, ps, 2)
    resumed = CheckpointStore(tmp_path, keep=10, full_every=5)
    with ShardedPS.in_process(_tables(), 2) as ps:
        assert Manifest.read(_save(resumed, ps, 3)).chain == []  # nothing restored: full
        resumed.load_tables(c1, ps)
        c4 = _save(resumed, ps, 4)
        assert Manifest.read(c4).chain == [c1.name]
        want = _rows(ps)
    with ShardedPS.in_process(_tables(), 3) as back:
        CheckpointStore(tmp_path).load_tables(c4, back)
        _assert_rows_equal(_rows(back), want)
    assert Manifest.read(c2).chain == [c1.name]


def test_a_chain_with_a_missing_link_is_refused_and_not_intact(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=10, full_every=3)
    with ShardedPS.in_process(_tables(), 1) as ps:
        c1, c2 = _save(store, ps, 1), _save(store, ps, 2)
        before = _rows(ps)
    (c1 / "manifest.json").unlink()
    assert store.intact() == []
    with ShardedPS.in_process(_tables(), 1) as back:
        with pytest.raises(kraken.CheckpointError):
            store.load_tables(c2, back)
        assert all(v["keys"].size == 0 for v in _rows(back).values())
    assert any(v["keys"].size for v in before.values())


def test_a_save_on_another_layout_than_its_base_is_full(tmp_path: Path) -> None:
    ps = ShardedPS.in_process(_tables(), 1)
    layout = ps.save(tmp_path / "a")
    assert layout["incremental"] is False
    assert ps.save(tmp_path / "b", base=layout)["incremental"] is True
    other = {**layout, "router": {"buckets": 7, "bucket_to_shard": [0] * 7}}
    assert ps.save(tmp_path / "c", base=other)["incremental"] is False
    assert read_table_file(tmp_path / "c/shard-00000/emb.ktab").since is None
    ps.close()


def test_saving_the_same_step_again_replaces_it_and_keeps_the_chain_whole(
        tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5, full_every=4)
    with ShardedPS.in_process(_tables(), 2) as ps:
        c1, c2 = _save(store, ps, 1), _save(store, ps, 2)
        ps.pull({"emb": np.array([30, 31, 30, 31])}, train=True, now=9)
        again = store.save(step=2, samples=0, stream_offset=0, ps=ps, parts={}, meta={})
        want = _rows(ps)
    assert again == c2 and Manifest.read(c2).chain == [c1.name]
    with ShardedPS.in_process(_tables(), 1) as back:
        CheckpointStore(tmp_path).load_tables(c2, back)
        _assert_rows_equal(_rows(back), want)
