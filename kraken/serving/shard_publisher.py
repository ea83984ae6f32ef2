"""``ShardPublisher``: a parameter-server shard publishes its own rows for serving.

With tables on shards, the rows need not pass through the trainer: every shard publishes
the rows touched since its last version, and the trainer publishes only the dense
weights (``Publisher(..., rows=False)``). Each shard's versions form a stream of their
own, numbered 1, 2, 3, ... per shard, each a row-only :class:`ModelVersion` tagged
``shard = i``, ``shards = N``::

    every sync_interval (1 s)     delta v (base v - 1): per table, rows changed since the
                                  last version (``touched_since``) and keys evicted since
    at start, every snapshot_every
    deltas, when a follower asks, snapshot v: every live row of every table
    or when a delta is impossible

A version is written only when something changed; a shard restored from a checkpoint
(its ``info().checkpoint`` changed) publishes a snapshot next. Numbering continues from the newest
version of the transport (a restarted shard's first publication is a snapshot: followers
see a gap and load it). ``maybe_publish`` / ``publish`` do the work with the injected
``clock``; ``start()`` runs them in a thread every ``sync_interval`` (what ``kraken ps
--publish`` does). The shard itself does no I/O: this class reads it through the verbs
``delta(table, since)`` and ``snapshot(table)``, which are safe beside training requests.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from kraken.config import check_int, check_number
from kraken.errors import LifecycleError, StaleVersionError
from kraken.ps.shard import ShardInfo
from kraken.serving.directory import DirectoryTransport, shard_dir
from kraken.serving.publisher import Transport
from kraken.serving.version import ModelVersion, TableUpdate
from kraken.table import TableConfig, TableDelta

__all__ = ["ShardPublisher", "ShardSource"]


class ShardSource(Protocol):
    """What a shard publisher reads: :class:`kraken.ps.shard.Shard` has these."""

    index: int
    of: int

    @property
    def tables(self) -> dict[str, TableConfig]: ...

    def info(self) -> ShardInfo: ...

    def delta(self, table: str, since: int) -> TableDelta: ...

    def snapshot(self, table: str) -> TableDelta: ...


class ShardPublisher:
    """Publishes the rows of one shard (see the module docstring).

    Args:
        shard: the shard (its ``index`` and ``of`` tag every version).
        transport: a :class:`Transport`, or the model directory (the shard writes under
            ``MODEL_DIR/shards/shard-<index>/``).
        sync_interval: seconds between row deltas.
        snapshot_every: deltas between two snapshots (0: only at start and when asked).
        clock: wall clock (unix seconds), injectable for tests.
        on_publish: called with each published version, on the publishing thread.
    """

    def __init__(self, shard: ShardSource, transport: Transport | str | os.PathLike[str], *,
                 sync_interval: float = 1.0, snapshot_every: int = 300,
                 clock: Callable[[], float] = time.time,
                 on_publish: Callable[[ModelVersion], None] | None = None) -> None:
        check_number("sync_interval", sync_interval, lo=0.0)
        check_int("snapshot_every", snapshot_every, lo=0)
        self.shard = shard
        self.transport: Transport = (
            DirectoryTransport(shard_dir(transport, shard.index))
            if isinstance(transport, (str, os.PathLike)) else transport)
        self.sync_interval = float(sync_interval)
        self.snapshot_every = int(snapshot_every)
        self.clock = clock
        self.on_publish = on_publish
        self.lineage = uuid.uuid4().hex[:12]
        self.version = self.transport.latest_version()
        self.published = 0
        self.errors = 0
        self.last_error = ""
        self._since: dict[str, int] | None = None
        self._checkpoint: str | None = None
        self._deltas = 0
        self._last = -math.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def next_version(self) -> int:
        """The version that will carry every change the shard made before this call (it
        waits for a publication in progress, which may or may not hold such a change)."""
        with self._lock:
            return self.version + 1

    def maybe_publish(self) -> ModelVersion | None:
        """Publish if ``sync_interval`` has passed since the last publication (or none was)."""
        if self.clock() - self._last < self.sync_interval and self._since is not None:
            return None
        return self.publish()

    def publish(self, *, full: bool = False) -> ModelVersion | None:
        """Publish now: the delta since the last version (if any row changed) and, when
        due, a snapshot; returns the last version written (None: nothing changed).

        A transport failure (``OSError``) is counted in ``errors``; the next publication
        is then a snapshot.
        """
        with self._lock:
            try:
                return self._publish(full)
            except OSError as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._since = None
                return None

    def _publish(self, full: bool) -> ModelVersion | None:
        now = self.clock()
        self._last = now
        info = self.shard.info()
        clock = int(info.clock)
        if info.checkpoint != self._checkpoint:  # restored: the cursors mean nothing now
            self._checkpoint, self._since = info.checkpoint, None
        delta = None if self._since is None else self._delta(self._since)
        snap = full or delta is None or self.transport.wants_snapshot()
        out = None
        if delta is not None and any(len(t) for t in delta[0].values()):
            self.version += 1
            out = self._version(now, clock, base=self.version - 1, tables=delta[0])
            self._since = delta[1]
            self._deltas += 1
            self._send(out)
            snap = snap or 0 < self.snapshot_every <= self._deltas
        elif snap:
            self.version += 1
        if snap:
            tables, since = {}, {}
            for name in self.shard.tables:
                tables[name], since[name] = _update(self.shard.snapshot(name))
            out = self._version(now, clock, base=None, tables=tables)
            self._since = since
            self._deltas = 0
            self._send(out)
        return out

    def _version(self, now: float, clock: int, *, base: int | None,
                 tables: dict[str, TableUpdate]) -> ModelVersion:
        return ModelVersion(version=self.version, base=base, publish_time=now,
                            max_event_time=clock, lineage=self.lineage, tables=tables,
                            shard=self.shard.index, shards=self.shard.of)

    def _delta(self, since: dict[str, int]
               ) -> tuple[dict[str, TableUpdate], dict[str, int]] | None:
        tables, after = {}, {}
        try:
            for name in self.shard.tables:
                tables[name], after[name] = _update(self.shard.delta(name, since[name]))
        except StaleVersionError:
            return None
        return tables, after

    def _send(self, v: ModelVersion) -> None:
        self.transport.send(v)
        self.published += 1
        if self.on_publish is not None:
            self.on_publish(v)

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> ShardPublisher:
        """Publish every ``sync_interval`` seconds in a daemon thread until :meth:`stop`.

        Raises :class:`LifecycleError` if it is already running.
        """
        if self._thread is not None:
            raise LifecycleError("the shard publisher is already running; stop() it first")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"kraken-publish-shard-{self.shard.index}")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.maybe_publish()
            except Exception as exc:  # never let the publishing thread die  # noqa: BLE001
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(min(self.sync_interval, 0.05) or 0.05)

    def stop(self) -> None:
        """Stop the thread (after one last publication) and close the transport."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
            self.publish()
        self.transport.close()


def _update(d: TableDelta) -> tuple[TableUpdate, int]:
    return TableUpdate(keys=d.keys, weights=d.weights, evicted=d.evicted), d.version
