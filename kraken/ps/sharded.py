"""``ShardedPS``: the parameter server as seen by a worker, over N shard endpoints.

A batch's keys are split by the :class:`~kraken.ps.router.Router` (one O(N) pass per
table), every shard gets one request holding its part of every table, the requests
run concurrently, and rows come back in the caller's order::

    keys ──partition──> shard 0: {emb: k0, wide: k0}  ──┐
                        shard 1: {emb: k1, wide: k1}  ──┼─ concurrently ─> rows[order] = concat
                        ...                             ┘

An endpoint is anything with the verbs of :class:`~kraken.ps.shard.Shard`: the shard
itself (in process) or a :class:`~kraken.ps.client.RemoteShard` (gRPC). With one shard
nothing is partitioned and no thread is involved, so :class:`LocalPS` costs what a
table call costs.

Pushes go to one single-threaded queue per shard, so every shard applies one worker's
pushes in order. With ``push_staleness = k`` a push returns once at most ``k`` earlier
pushes are still in flight (k = 0: it returns when every shard applied it). An error of
a background push is raised by the next call.

With ``background_push`` a push returns as soon as it is queued and the bound moves to
the client's next call: a pull waits until at most ``k`` pushes are in flight, every
other verb until none is. With ``k = 0`` every call therefore sees exactly what
synchronous pushes give (same rows, same order, bit for bit), while what the caller
computes between a push and its next call (a trainer's dense optimizer step) overlaps
the push. Errors a shard would raise for the push's arguments (unknown table, keys, dtype,
shape, ``now``) are raised by the push itself, non-finite values by the next call. The
client may be called from two threads (a trainer's prefetch thread pulls
while its main thread pushes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from kraken.config import check_int
from kraken.errors import (
    CheckpointMismatchError,
    ConfigError,
    DTypeError,
    InputError,
    ShapeError,
    StaleVersionError,
)
from kraken.ps.router import Router
from kraken.ps.shard import Shard, ShardInfo, _as_now, shard_configs
from kraken.table import TableConfig, TableDelta, TableStats
from kraken.types import F32, Keys

__all__ = ["LocalPS", "ShardEndpoint", "ShardedPS"]

T = TypeVar("T")


class ShardEndpoint(Protocol):
    """The verbs of one shard, in process or remote (see :class:`~kraken.ps.shard.Shard`)."""

    def info(self) -> ShardInfo: ...

    def pull(self, keys: Mapping[str, Keys], *, train: bool = False, now: int | None = None,
             request_id: str | None = None) -> dict[str, F32]: ...

    def push(self, grads: Mapping[str, tuple[Keys, F32]], now: int, *,
             request_id: str | None = None) -> None: ...

    def evict(self, now: int | None = None) -> dict[str, int]: ...

    def stats(self) -> dict[str, TableStats]: ...

    def delta(self, table: str, since: int) -> TableDelta: ...

    def snapshot(self, table: str) -> TableDelta: ...

    def save(self, directory: str | Path, since: Mapping[str, int] | None = None
             ) -> dict[str, dict[str, int]]: ...

    def load(self, sources: list[str | Path], *, source_router: Router, router: Router,
             checkpoint: str, deltas: Sequence[Sequence[str | Path]] = ()) -> None: ...

    def close(self) -> None: ...


def _shard_dir(i: int) -> str:
    return f"shard-{i:05d}"


class ShardedPS:
    """A parameter server over ``endpoints`` (shard ``i`` at position ``i``).

    Args:
        endpoints: one per shard, in shard order.
        router: key -> shard; ``router.n_shards == len(endpoints)``.
        push_staleness: pushes that may still be in flight when a push returns (with
            ``background_push``: when a pull starts).
        background_push: a push returns once queued; the next call waits for it (see
            the module docstring).

    The handshake asks every shard for its :class:`ShardInfo` and refuses a set of
    shards that disagree on position, tables or the checkpoint they were restored from.
    """

    def __init__(self, endpoints: Sequence[ShardEndpoint], router: Router, *,
                 push_staleness: int = 0, background_push: bool = False) -> None:
        check_int("ps.push_staleness", push_staleness, lo=0)
        if router.n_shards != len(endpoints):
            raise ConfigError(f"ps: the router has {router.n_shards} shards, "
                              f"{len(endpoints)} endpoints were given")
        self._endpoints = list(endpoints)
        self.router = router
        self.push_staleness = push_staleness
        self.background_push = bool(background_push)
        infos = [e.info() for e in self._endpoints]
        self._tables = _check_handshake(infos)
        self.checkpoint = infos[0].checkpoint
        n = len(self._endpoints)
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ps-fanout") \
            if n > 1 else None
        self._push_queues = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ps-push{i}")
                             for i in range(n)] \
            if (n > 1 or push_staleness or background_push) else []
        self._in_flight: deque[list[Future[None]]] = deque()
        self._flight = threading.Lock()  # guards _in_flight (pulls may come from a 2nd thread)
        self._closed = False

    @classmethod
    def in_process(cls, tables: Mapping[str, TableConfig], shards: int = 1, *,
                   buckets: int | None = None, push_staleness: int = 0,
                   evict_every: int = 10, background_push: bool = False) -> ShardedPS:
        """``shards`` in-process :class:`Shard` s sharing each table's budget evenly."""
        router = Router.uniform(shards) if buckets is None else Router.uniform(shards, buckets)
        per = shard_configs(tables, shards)
        eps = [Shard(per, index=i, of=shards, evict_every=evict_every) for i in range(shards)]
        ps = cls(eps, router, push_staleness=push_staleness, background_push=background_push)
        ps._tables = dict(tables)
        return ps

    # -- queries -------------------------------------------------------------------------

    @property
    def tables(self) -> dict[str, TableConfig]:
        return dict(self._tables)

    @property
    def n_shards(self) -> int:
        return len(self._endpoints)

    @property
    def endpoints(self) -> list[ShardEndpoint]:
        return list(self._endpoints)

    @property
    def pending_pushes(self) -> int:
        """Pushes sent whose application has not been waited for (at most the staleness)."""
        return len(self._in_flight)

    def stats(self) -> dict[str, TableStats]:
        """Per table, sizes and counters summed over shards (``version``/``clock``: max)."""
        per = self.shard_stats()
        out = {}
        for name in self._tables:
            parts = [p[name] for p in per]
            sums = {f.name: sum(getattr(s, f.name) for s in parts)
                    for f in dataclasses.fields(TableStats)}
            sums["dim"] = parts[0].dim
            sums["version"] = max(s.version for s in parts)
            sums["clock"] = max(s.clock for s in parts)
            out[name] = TableStats(**sums)
        return out

    def shard_stats(self) -> list[dict[str, TableStats]]:
        self.flush()
        return self._fan(lambda e: e.stats())

    def delta(self, table: str, since: Sequence[int]) -> tuple[TableDelta, ...]:
        self._check_table(table)
        if len(since) != self.n_shards:
            raise InputError(f"a delta cursor has one version per shard: got {len(since)} "
                             f"for {self.n_shards} shards")
        self.flush()
        cursor = list(since)
        return tuple(self._fan(lambda e, i: e.delta(table, int(cursor[i])), indexed=True))

    def snapshot(self, table: str) -> tuple[TableDelta, ...]:
        self._check_table(table)
        self.flush()
        return tuple(self._fan(lambda e: e.snapshot(table)))

    # -- training verbs ------------------------------------------------------------------

    def pull(self, keys: Mapping[str, Keys], *, train: bool = False,
             now: int | None = None) -> dict[str, F32]:
        """Rows of ``keys[table]: int64[N_t]`` as ``float32[N_t, D_t]``, one request per shard."""
        self._raise_push_errors()
        for name in keys:
            self._check_table(name)
        self._settle(self.push_staleness)
        if self.n_shards == 1:
            return self._endpoints[0].pull(keys, train=train, now=now)
        plans, parts = self._split({n: _flat_keys(k) for n, k in keys.items()})
        replies = self._fan(lambda e, i: e.pull(parts[i], train=train, now=now)
                            if parts[i] else {},
                            indexed=True)
        out = {}
        for name, (order, bounds) in plans.items():
            rows = np.empty((order.shape[0], self._tables[name].dim), dtype=np.float32)
            for i in range(self.n_shards):
                if bounds[i + 1] > bounds[i]:
                    rows[order[bounds[i]:bounds[i + 1]]] = replies[i][name]
            out[name] = rows
        return out

    def push(self, grads: Mapping[str, tuple[Keys, F32]], now: int) -> None:
        """One optimizer step per table, ``grads[table] = (keys int64[N], float32[N, D])``."""
        self._raise_push_errors()
        for name in grads:
            self._check_table(name)
        if self.background_push:
            self._check_push(grads, now)
        if not self._push_queues:
            self._endpoints[0].push(grads, now)
            return
        if self.n_shards == 1:
            parts: list[dict[str, tuple[Keys, F32]]] = [dict(grads)]
        else:
            parts = [{} for _ in range(self.n_shards)]
            for name, (k, g) in grads.items():
                k = _flat_keys(k)
                if not isinstance(g, np.ndarray) or g.ndim != 2 or g.shape[0] != k.shape[0]:
                    raise InputError(f"grads[{name!r}]: expected float32[{k.shape[0]}, D], got "
                                     f"{getattr(g, 'shape', type(g).__name__)}")
                order, bounds = self.router.partition(k)
                ks, gs = k[order], g[order]
                for i in range(self.n_shards):
                    if bounds[i + 1] > bounds[i]:
                        parts[i][name] = (ks[bounds[i]:bounds[i + 1]], gs[bounds[i]:bounds[i + 1]])
        if self.background_push:  # at most push_staleness + 1 in flight after this one
            self._settle(self.push_staleness)
        with self._flight:
            batch = [self._push_queues[i].submit(self._endpoints[i].push, parts[i], now)
                     for i in range(self.n_shards) if parts[i]]
            self._in_flight.append(batch)
        if not self.background_push:
            self._settle(self.push_staleness)

    def _check_push(self, grads: Mapping[str, tuple[Keys, F32]], now: int) -> None:
        """What a shard would refuse of a push, checked before it is queued (a push in
        the background raises errors at the next call): keys, ``now``, gradient dtype
        and shape. Finiteness is the shard's check (it reads every value)."""
        _as_now(now)
        for name, (k, g) in grads.items():
            n, dim = _flat_keys(k).shape[0], self._tables[name].dim
            if not isinstance(g, np.ndarray) or g.dtype != np.float32:
                raise DTypeError(f"grads[{name!r}] must be a float32 numpy array, got "
                                 f"{getattr(g, 'dtype', type(g).__name__)}")
            if g.shape != (n, dim):
                raise ShapeError(f"grads[{name!r}] must have shape ({n}, {dim}) for {n} keys "
                                 f"of dim {dim}, got {g.shape}")

    def flush(self) -> None:
        """Wait until every push sent so far is applied (raises the first push error)."""
        self._settle(0)

    def _settle(self, keep: int) -> None:
        """Wait, oldest first, until at most ``keep`` pushes are in flight; raises the
        first error of a push this thread took off the queue."""
        while True:
            with self._flight:
                if len(self._in_flight) <= keep:
                    return
                batch = self._in_flight[0]
            wait(batch)
            with self._flight:
                mine = bool(self._in_flight) and self._in_flight[0] is batch
                if mine:
                    self._in_flight.popleft()
            if mine:
                self._wait(batch)

    def evict(self, now: int) -> dict[str, int]:
        self.flush()
        per = self._fan(lambda e: e.evict(now))
        return {name: sum(p[name] for p in per) for name in self._tables}

    # -- checkpoints ---------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str],
             base: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every shard writes ``directory/shard-<i>/``; returns the layout for the manifest.

        With ``base`` (the layout an earlier save of this PS returned), an incremental
        save where it can be one: every shard writes only what changed since that save,
        and the layout says ``"incremental": true``. It falls back to a full save (and
        says ``false``) when the layout changed since, or a shard no longer remembers the
        evictions since then.
        """
        self.flush()
        d = Path(directory)
        since = self._base_versions(base)
        files = None
        if since is not None:
            try:
                files = self._fan(lambda e, i: e.save(d / _shard_dir(i), since=since[i]),
                                  indexed=True)
            except StaleVersionError:
                shutil.rmtree(d, ignore_errors=True)
        incremental = files is not None
        if files is None:
            files = self._fan(lambda e, i: e.save(d / _shard_dir(i)), indexed=True)
        return {"router": self.router.to_dict(), "incremental": incremental,
                "shards": [{"dir": _shard_dir(i), "files": f} for i, f in enumerate(files)]}

    def _base_versions(self, base: dict[str, Any] | None) -> list[dict[str, int]] | None:
        """Each shard's table versions in ``base``, or None if no incremental save can
        follow it (no base, or another layout)."""
        if base is None:
            return None
        try:
            if Router.from_dict(base["router"]) != self.router:
                return None
            out = [{f[:-len(".ktab")]: int(v["version"]) for f, v in s["files"].items()
                    if f.endswith(".ktab")} for s in base["shards"]]
        except (KeyError, TypeError, ValueError):
            return None
        if len(out) != self.n_shards or any(set(v) != set(self._tables) for v in out):
            return None
        return out

    def load(self, directory: str | os.PathLike[str], layout: dict[str, Any],
             checkpoint: str,
             deltas: Sequence[tuple[str | os.PathLike[str], dict[str, Any]]] = ()) -> None:
        """Restore every shard from a checkpoint written with ``layout`` (any shard count).

        ``deltas``: ``(directory, layout)`` of incremental saves made after it, oldest
        first, applied in order (they share the full save's router).
        """
        self.flush()
        d = Path(directory)
        try:
            source = Router.from_dict(layout["router"])
            dirs = [d / s["dir"] for s in layout["shards"]]
            delta_dirs = []
            for dd, lay in deltas:
                if Router.from_dict(lay["router"]) != source:
                    raise CheckpointMismatchError(f"{dd}: an incremental save with another "
                                                  "shard layout than its full save")
                delta_dirs.append([Path(dd) / s["dir"] for s in lay["shards"]])
        except (KeyError, TypeError) as exc:
            raise CheckpointMismatchError(f"{d}: unreadable shard layout: {exc}") from exc
        if len(dirs) != source.n_shards:
            raise CheckpointMismatchError(f"{d}: {len(dirs)} shard directories for a layout "
                                          f"of {source.n_shards} shards")
        if source.n_shards == self.n_shards:
            router = source  # the layout that wrote it: every shard loads its own files
        elif source.n_buckets == self.router.n_buckets or source.n_shards == 1:
            router = self.router
        else:  # the bucket count is fixed for the life of a model: keep the checkpoint's
            router = Router.uniform(self.n_shards, source.n_buckets)
        self._fan(lambda e: e.load(dirs, source_router=source, router=router,
                                   checkpoint=checkpoint, deltas=delta_dirs))
        self.router = router
        self.checkpoint = checkpoint

    def close(self) -> None:
        """Wait for pushes in flight, stop the fan-out threads, close every endpoint."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            for q in self._push_queues:
                q.shutdown(wait=True)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            for e in self._endpoints:
                e.close()

    def __enter__(self) -> ShardedPS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _check_table(self, name: str) -> None:
        if name not in self._tables:
            raise InputError(f"unknown table {name!r}; tables are {sorted(self._tables)}")

    def _split(self, keys: Mapping[str, Keys]
               ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[dict[str, Keys]]]:
        plans = {}
        parts: list[dict[str, Keys]] = [{} for _ in range(self.n_shards)]
        for name, k in keys.items():
            order, bounds = self.router.partition(k)
            plans[name] = (order, bounds)
            ks = k[order]
            for i in range(self.n_shards):
                if bounds[i + 1] > bounds[i]:
                    parts[i][name] = ks[bounds[i]:bounds[i + 1]]
        return plans, parts

    def _fan(self, fn: Callable[..., T], *, indexed: bool = False) -> list[T]:
        """``fn(endpoint[, i])`` for every shard, concurrently; results in shard order."""
        call = fn if indexed else (lambda e, i: fn(e))
        if self._pool is None:
            return [call(e, i) for i, e in enumerate(self._endpoints)]
        futures = [self._pool.submit(call, e, i) for i, e in enumerate(self._endpoints)]
        wait(futures)  # every shard finishes (or fails) before an error is raised
        return [f.result() for f in futures]

    def _wait(self, batch: list[Future[None]]) -> None:
        errors = [f.exception() for f in batch]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def _raise_push_errors(self) -> None:
        """Raise the error of a finished background push now rather than much later."""
        if self._closed:
            raise InputError("the parameter server client is closed")
        done = []
        with self._flight:
            while self._in_flight and all(f.done() for f in self._in_flight[0]):
                done.append(self._in_flight.popleft())
        for batch in done:
            self._wait(batch)


class LocalPS(ShardedPS):
    """Every table in this process: one :class:`Shard`, no routing, no threads (but the
    push thread of ``background_push``).

    Args:
        tables: name -> config of each table.
        evict_every: pushes between the shard's eviction passes (0: never).
        background_push: apply each push on a background thread while the caller goes
            on; its next call waits for it, so every call sees what a synchronous push
            gives (see :class:`ShardedPS`).
    """

    def __init__(self, tables: Mapping[str, TableConfig], *, evict_every: int = 10,
                 background_push: bool = False) -> None:
        super().__init__([Shard(tables, evict_every=evict_every)], Router.uniform(1),
                         background_push=background_push)


def _check_handshake(infos: list[ShardInfo]) -> dict[str, TableConfig]:
    n = len(infos)
    if n == 0:
        raise ConfigError("ps: no shards")
    for i, info in enumerate(infos):
        if (info.index, info.of) != (i, n):
            raise ConfigError(f"ps.shards[{i}] says it is shard {info.index} of {info.of}, "
                              f"expected {i} of {n}")
    names = set(infos[0].tables)
    for info in infos[1:]:
        if set(info.tables) != names:
            raise ConfigError(f"shard {info.index} serves tables {sorted(info.tables)}, "
                              f"shard 0 serves {sorted(names)}")
        if info.checkpoint != infos[0].checkpoint:
            raise CheckpointMismatchError(
                f"shard {info.index} was restored from checkpoint {info.checkpoint!r} and "
                f"shard 0 from {infos[0].checkpoint!r}: refusing to mix two cuts; restart "
                "every shard from the same checkpoint")
    tables = {}
    for name in sorted(names):
        cfgs = [TableConfig.from_dict(info.tables[name]) for info in infos]
        first = dataclasses.replace(cfgs[0], capacity=1)
        for i, c in enumerate(cfgs[1:], 1):
            if dataclasses.replace(c, capacity=1) != first:
                raise ConfigError(f"tables.{name}: shard {i} has another config than shard 0")
        tables[name] = dataclasses.replace(cfgs[0], capacity=sum(c.capacity for c in cfgs))
    return tables


def _flat_keys(keys: Any) -> Keys:
    if not isinstance(keys, np.ndarray) or keys.dtype.kind not in "iu":
        raise InputError(f"keys must be an integer numpy array, got "
                         f"{getattr(keys, 'dtype', type(keys).__name__)}")
    return np.ascontiguousarray(keys.reshape(-1)).view(np.int64) if keys.dtype == np.uint64 \
        else np.ascontiguousarray(keys.reshape(-1), dtype=np.int64)
