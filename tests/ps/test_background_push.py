"""``background_push``: pushes applied on a thread must be invisible to the caller.

The reference is the same parameter server with synchronous pushes: after any sequence
of pushes, training pulls, stats and evictions, every answer and the final rows are
bit-identical. The background shard takes a moment before applying each push, so a call
that did not wait for it would see the rows before the push.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.errors import ConfigError, NonFiniteError, ShapeError
from kraken.optim import RowWiseAdaGrad
from kraken.ps import LocalPS, PSConfig, Router, Shard, ShardedPS
from kraken.ps.config import build_ps
from kraken.table import LRU, CountMin, TableConfig


def _tables() -> dict[str, TableConfig]:
    return {"emb": TableConfig(dim=4, capacity=40, optimizer=RowWiseAdaGrad(lr=0.3),
                               admission=CountMin(threshold=2, width=256),
                               eviction=LRU(0.9, 0.5))}


class _SlowShard(Shard):
    def push(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        time.sleep(0.002)
        super().push(*args, **kw)


def _grads(keys: np.ndarray) -> np.ndarray:
    return np.sin(keys[:, None] * np.arange(1, 5)).astype(np.float32)


ops = st.lists(st.tuples(st.sampled_from(["pull", "push", "push", "stats", "evict"]),
                         st.lists(st.integers(0, 60), min_size=1, max_size=24)),
               min_size=1, max_size=14)


@settings(max_examples=30, deadline=None)
@given(ops)
def test_background_pushes_answer_what_synchronous_pushes_answer(steps) -> None:
    sync = LocalPS(_tables(), evict_every=2)
    bg = ShardedPS([_SlowShard(_tables(), evict_every=2)], Router.uniform(1),
                   background_push=True)
    try:
        for now, (op, ids) in enumerate(steps, 1):
            keys = np.array(ids, dtype=np.int64)
            if op == "pull":
                a = sync.pull({"emb": keys}, train=True, now=now)["emb"]
                b = bg.pull({"emb": keys}, train=True, now=now)["emb"]
                assert np.array_equal(a, b)
            elif op == "push":
                for ps in (sync, bg):
                    ps.push({"emb": (keys, _grads(keys))}, now)
            elif op == "stats":
                assert sync.stats() == bg.stats()
            else:
                assert sync.evict(now) == bg.evict(now)
        a, b = sync.snapshot("emb")[0], bg.snapshot("emb")[0]
        order_a, order_b = a.keys.argsort(), b.keys.argsort()
        assert np.array_equal(a.keys[order_a], b.keys[order_b])
        assert np.array_equal(a.weights[order_a], b.weights[order_b])
        assert sync.stats() == bg.stats()
    finally:
        sync.close()
        bg.close()


def test_an_error_of_a_background_push_is_raised_by_the_next_call() -> None:
    ps = LocalPS(_tables(), background_push=True)
    try:
        keys = np.arange(3, dtype=np.int64)
        with pytest.raises(ShapeError, match="shape"):  # checked before it is queued
            ps.push({"emb": (keys, np.ones((3, 5), np.float32))}, now=1)
        ps.push({"emb": (keys, np.full((3, 4), np.nan, np.float32))}, now=1)
        with pytest.raises(NonFiniteError, match="NaN"):  # the shard's own check
            ps.pull({"emb": keys}, train=True, now=1)
        assert ps.pending_pushes == 0
        assert ps.pull({"emb": keys}, train=True, now=2)["emb"].shape == (3, 4)
    finally:
        ps.close()


def test_the_ps_section_turns_it_on_and_names_a_bad_value() -> None:
    ps = build_ps(_tables(), PSConfig.from_dict({"background_push": True}))
    try:
        assert isinstance(ps, LocalPS) and ps.background_push
    finally:
        ps.close()
    assert not build_ps(_tables(), PSConfig()).background_push
    with pytest.raises(ConfigError, match="ps.background_push: expected true or false"):
        PSConfig.from_dict({"background_push": "yes"})
