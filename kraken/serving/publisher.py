"""The trainer side of parameter sync: publish versions of the model as it learns.

Called by the :class:`~kraken.train.Trainer` after every batch (``maybe_publish(now)``,
on the training thread, between batches, so every version is a consistent cut)::

    every sync_interval (1 s)          delta: rows touched since the last version
                                       (``ps.delta`` = ``touched_since``) + evicted keys
    every dense_sync_interval (60 s)   ... plus the dense weights (also when asked:
                                       ``request_dense()`` or ``publish(dense=True)``)
    at start, every snapshot_interval  a full snapshot (spec, every row, dense weights) at
    (300 s), when a transport asks,    the same version, for servers that start late or
    or when a delta is impossible      fall behind

With ``rows=False`` the parameter-server shards publish the rows themselves
(:class:`~kraken.serving.shard_publisher.ShardPublisher`, ``kraken ps --publish``) and this
publisher writes only the dense weights: a version (tables empty, ``shards = N``) every
``dense_sync_interval``, and snapshots holding the spec and the dense weights.

Versions count up from the transport's newest one, so a restarted trainer continues the
numbering; its first publication is a snapshot with no delta of the same number, which a
follower sees as a gap and heals by loading that snapshot.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from torch import nn

from kraken.config import check_number
from kraken.errors import StaleVersionError
from kraken.ps.protocol import ParameterServer
from kraken.serving.directory import DirectoryTransport
from kraken.serving.spec import ModelSpec
from kraken.serving.version import ModelVersion, TableUpdate
from kraken.table import TableDelta

__all__ = ["FanoutTransport", "Publisher", "Transport"]


class Transport(Protocol):
    """Carries published versions to servers: a model directory or a push to servers."""

    def latest_version(self) -> int:
        """The newest version already published through this transport (0 if none)."""
        ...

    def wants_snapshot(self) -> bool:
        """Whether a server asked for a full snapshot (it found a gap or started late)."""
        ...

    def send(self, version: ModelVersion) -> None: ...

    def close(self) -> None: ...


class FanoutTransport:
    """Several transports as one (a model directory and pushes, say)."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        self.transports = list(transports)

    def latest_version(self) -> int:
        return max([0, *(t.latest_version() for t in self.transports)])

    def wants_snapshot(self) -> bool:
        return any(t.wants_snapshot() for t in self.transports)

    def send(self, version: ModelVersion) -> None:
        errors = []
        for t in self.transports:
            try:
                t.send(version)
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        for t in self.transports:
            t.close()


class Publisher:
    """Publishes versions of ``model`` (dense, torch) and the tables of ``ps``.

    Args:
        ps: the trainer's parameter server.
        model: the dense model being trained.
        spec: how a server rebuilds the model (:meth:`ModelSpec.from_run`).
        transport: a :class:`Transport`, or a model directory path
            (:class:`~kraken.serving.directory.DirectoryTransport`).
        sync_interval: seconds between row deltas.
        dense_sync_interval: seconds between dense-weight syncs (0 = every version).
        snapshot_interval: seconds between full snapshots.
        clock: wall clock (unix seconds), injectable for tests.
        on_publish: called with each published version, on the training thread.
        rows: publish the tables' rows (default). False when the ``ps.n_shards`` shards
            publish them on their own: versions then carry only the dense weights (and the
            spec in snapshots), on the ``dense_sync_interval`` cadence.
    """

    def __init__(self, ps: ParameterServer, model: nn.Module, spec: ModelSpec,
                 transport: Transport | str | os.PathLike[str], *, sync_interval: float = 1.0,
                 dense_sync_interval: float = 60.0, snapshot_interval: float = 300.0,
                 clock: Callable[[], float] = time.time,
                 on_publish: Callable[[ModelVersion], None] | None = None,
                 rows: bool = True) -> None:
        check_number("sync_interval", sync_interval, lo=0.0)
        check_number("dense_sync_interval", dense_sync_interval, lo=0.0)
        check_number("snapshot_interval", snapshot_interval, lo=0.0)
        self.ps, self.model, self.spec = ps, model, spec
        self.transport: Transport = (transport if not isinstance(transport, (str, os.PathLike))
                                     else DirectoryTransport(transport))
        self.sync_interval = float(sync_interval)
        self.dense_sync_interval = float(dense_sync_interval)
        self.snapshot_interval = float(snapshot_interval)
        self.clock = clock
        self.on_publish = on_publish
        self.rows = bool(rows)
        self.shards = 0 if self.rows else int(ps.n_shards)
        self.lineage = uuid.uuid4().hex[:12]
        self.version = self.transport.latest_version()
        self.dense_version = 0
        self.max_event_time = 0
        self.published = 0
        self.errors = 0
        self.last_error = ""
        self._spec_dict = spec.to_dict()
        self._since: dict[str, tuple[int, ...]] | None = None
        self._last = self._last_dense = self._last_snapshot = -math.inf
        self._dense_requested = False

    def request_dense(self) -> None:
        """Include the dense weights in the next version."""
        self._dense_requested = True

    def maybe_publish(self, event_time: int | None = None) -> ModelVersion | None:
        """Publish if ``sync_interval`` has passed since the last version (or none was).

        ``event_time`` is the newest event time trained so far (the batch's ``now``).
        """
        if event_time is not None:
            self.max_event_time = max(self.max_event_time, int(event_time))
        interval = self.sync_interval if self.rows else self.dense_sync_interval
        if self.clock() - self._last < interval and self._since is not None:
            return None
        return self.publish()

    def publish(self, *, dense: bool = False, full: bool = False) -> ModelVersion | None:
        """Publish a version now; returns it (the snapshot when both were written), or None
        when nothing changed since the last one and nothing was asked for.

        A transport failure (``OSError``: disk full, a server down) does not stop training:
        it is counted in ``errors`` and the next publication is a full snapshot.
        """
        try:
            return self._publish(dense=dense, full=full)
        except OSError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._since = None
            return None

    def _publish(self, *, dense: bool, full: bool) -> ModelVersion | None:
        now = self.clock()
        self._last = now
        want_dense = (dense or self._dense_requested
                      or now - self._last_dense >= self.dense_sync_interval)
        snap = (full or self._since is None or self.transport.wants_snapshot()
                or now - self._last_snapshot >= self.snapshot_interval)
        delta = None if self._since is None else self._deltas(self._since)
        if delta is None:
            snap = True
        out = None
        if delta is not None and (any(len(t) for t in delta[0].values()) or want_dense):
            self.version += 1
            dense_arrays = self._dense() if want_dense else None
            if dense_arrays is not None:
                self.dense_version = self.version
            out = ModelVersion(version=self.version, base=self.version - 1, publish_time=now,
                               max_event_time=self.max_event_time, lineage=self.lineage,
                               tables=delta[0], dense=dense_arrays,
                               dense_version=self.dense_version, shards=self.shards)
            self._since = delta[1]
            self._send(out)
        elif snap:
            self.version += 1
        if snap:
            out = self._snapshot(now)
            self._send(out)
        if out is not None and out.dense is not None:
            self._last_dense = now
            self._dense_requested = False
        return out

    def close(self) -> None:
        self.transport.close()

    # -- internals -----------------------------------------------------------------------

    def _send(self, v: ModelVersion) -> None:
        self.transport.send(v)
        self.published += 1
        if self.on_publish is not None:
            self.on_publish(v)

    def _deltas(self, base: dict[str, tuple[int, ...]],
                ) -> tuple[dict[str, TableUpdate], dict[str, tuple[int, ...]]] | None:
        """Rows changed per table after the version vectors ``base`` (one version per
        shard), and the new vectors; None when a shard no longer retains what is needed
        (a snapshot must follow)."""
        tables, since = {}, {}
        if not self.rows:
            return tables, since
        try:
            for name in self.ps.tables:
                tables[name], since[name] = _merge(self.ps.delta(name, base[name]))
        except StaleVersionError:
            return None
        return tables, since

    def _dense(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def _snapshot(self, now: float) -> ModelVersion:
        tables, since = {}, {}
        for name in self.ps.tables if self.rows else ():
            tables[name], since[name] = _merge(self.ps.snapshot(name))
        self._since = since
        self._last_snapshot = now
        self.dense_version = self.version
        return ModelVersion(version=self.version, base=None, publish_time=now,
                            max_event_time=self.max_event_time, lineage=self.lineage,
                            tables=tables, dense=self._dense(), dense_version=self.version,
                            spec=self._spec_dict, shards=self.shards)


def _merge(parts: tuple[TableDelta, ...]) -> tuple[TableUpdate, tuple[int, ...]]:
    """One update from every shard's delta of a table (shards hold disjoint keys), and
    the version vector it brings the cursor to."""
    if len(parts) == 1:
        d = parts[0]
        return TableUpdate(keys=d.keys, weights=d.weights, evicted=d.evicted), (d.version,)
    return (TableUpdate(keys=np.concatenate([d.keys for d in parts]),
                        weights=np.concatenate([d.weights for d in parts]),
                        evicted=np.concatenate([d.evicted for d in parts])),
            tuple(d.version for d in parts))
