"""A :class:`~kraken.ps.shard.Shard` behind gRPC: service ``kraken.ps.Shard``.

Each method takes and returns one :mod:`kraken.ps.codec` container::

    Info      {}                                        -> ShardInfo
    Pull      {tables, train, now, request_id} keys/<t> -> rows/<t>
    Push      {tables, now, request_id} keys/<t> grads/<t> -> {}
    Evict     {now}                                     -> {evicted: {t: n}}
    Stats     {}                                        -> {stats: {t: TableStats}}
    Delta     {table, since}                            -> keys, weights, evicted
    Snapshot  {table}                                   -> keys, weights, evicted
    Save      {directory}                               -> {files}
    Load      {sources, source_router, router, checkpoint} -> {}

A request that fails (malformed, unknown table, wrong shape, a shard-side error) is
answered with an error container and changes nothing; the server keeps serving. The
server runs ``workers`` handler threads; the table kernels release the GIL, so one
shard uses more than one core when it has them. ``Save`` and ``Load`` only touch paths
under ``checkpoint_root`` when one is given (always, when bound beyond loopback).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from kraken.errors import ConfigError, InputError, KrakenError
from kraken.ps import codec
from kraken.ps.router import Router
from kraken.ps.shard import Shard
from kraken.ps.wire import ByteServer, Security, is_loopback

__all__ = ["SERVICE", "ShardServer"]

SERVICE = "kraken.ps.Shard"
_log = logging.getLogger("kraken.ps.server")


class ShardServer:
    """Serves ``shard`` on ``host:port`` (port 0: a free one); ``start()`` then ``stop()``."""

    def __init__(self, shard: Shard, *, host: str = "127.0.0.1", port: int = 0,
                 workers: int = 4, security: Security | None = None,
                 checkpoint_root: str | Path | None = None) -> None:
        if checkpoint_root is None and not is_loopback(host):
            raise ConfigError("a shard bound beyond loopback needs a checkpoint root "
                              "(the only place Save and Load may touch)")
        self.shard = shard
        self.root = None if checkpoint_root is None else Path(checkpoint_root).resolve()
        self.errors = 0  # requests answered with an error container
        self.internal_errors = 0  # of which a non-Kraken exception (a bug) was the cause
        self._lock = threading.Lock()
        handlers = {"Info": self._info, "Pull": self._pull, "Push": self._push,
                    "Evict": self._evict, "Stats": self._stats, "Delta": self._delta,
                    "Snapshot": self._snapshot, "Save": self._save, "Load": self._load}
        self._handlers = {m: self._guard(m, f) for m, f in handlers.items()}
        self._server = ByteServer(SERVICE, self._handlers, host=host, port=port,
                                  workers=workers, security=security)
        self.address, self.port = self._server.address, self._server.port

    @property
    def refused(self) -> int:
        """Calls refused for a missing or wrong token (never reach a handler)."""
        return self._server.refused

    def handle(self, method: str, payload: bytes) -> bytes:
        """Answer one request in process, as a gRPC call of ``method`` would be answered.

        ``payload`` and the reply are :mod:`kraken.ps.codec` containers; a malformed or
        refused request gets an error container and changes nothing. The token check is
        the transport's and is not applied here.
        """
        fn = self._handlers.get(method)
        if fn is None:
            raise InputError(f"unknown method {method!r}; methods are {sorted(self._handlers)}")
        return fn(payload)

    def start(self) -> ShardServer:
        self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace)

    # -- handlers ------------------------------------------------------------------------

    def _guard(self, method: str, fn: Callable[[codec.Message], bytes]
               ) -> Callable[[bytes], bytes]:
        def handle(payload: bytes) -> bytes:
            try:
                return fn(codec.decode(payload, f"{method} request"))
            except KrakenError as exc:
                with self._lock:
                    self.errors += 1
                _log.warning("shard %d: %s refused: %s", self.shard.index, method, exc)
                return codec.encode_error(exc)
            except Exception as exc:  # a bug must not take the shard down: report it
                with self._lock:
                    self.errors += 1
                    self.internal_errors += 1
                _log.exception("shard %d: %s failed", self.shard.index, method)
                return codec.encode_error(InputError(f"{method} failed: "
                                                     f"{type(exc).__name__}: {exc}"))
        return handle

    def _info(self, msg: codec.Message) -> bytes:
        return codec.encode(self.shard.info().to_dict())

    def _pull(self, msg: codec.Message) -> bytes:
        names = msg.tables()
        keys = {n: msg.keys(n) for n in names}
        rows = self.shard.pull(keys, train=msg.field("train", bool),
                               now=msg.field("now", int, optional=True),
                               request_id=msg.field("request_id", str, optional=True))
        return codec.encode_rows(rows, incarnation=self.shard.incarnation)

    def _push(self, msg: codec.Message) -> bytes:
        grads = {}
        for n in msg.tables():
            k = msg.keys(n)
            grads[n] = (k, msg.values("grads", n, k.shape[0]))
        self.shard.push(grads, msg.field("now", int),
                        request_id=msg.field("request_id", str, optional=True))
        return codec.encode({"incarnation": self.shard.incarnation})

    def _evict(self, msg: codec.Message) -> bytes:
        return codec.encode({"evicted": self.shard.evict(msg.field("now", int, optional=True))})

    def _stats(self, msg: codec.Message) -> bytes:
        return codec.encode({"stats": codec.stats_to_json(self.shard.stats())})

    def _delta(self, msg: codec.Message) -> bytes:
        return codec.encode_delta(self.shard.delta(msg.field("table", str),
                                                   msg.field("since", int)))

    def _snapshot(self, msg: codec.Message) -> bytes:
        return codec.encode_delta(self.shard.snapshot(msg.field("table", str)))

    def _save(self, msg: codec.Message) -> bytes:
        since = msg.field("since", dict, optional=True)
        if since is not None and not all(isinstance(k, str) and isinstance(v, int)
                                         and not isinstance(v, bool) for k, v in since.items()):
            raise InputError("malformed request: 'since' maps table names to versions")
        return codec.encode({"files": self.shard.save(self._path(msg.field("directory", str)),
                                                      since=since)})

    def _load(self, msg: codec.Message) -> bytes:
        sources = msg.field("sources", list)
        deltas = msg.field("deltas", list, optional=True) or []
        if not all(isinstance(step, list) for step in deltas):
            raise InputError("malformed request: 'deltas' is a list of lists of paths")
        self.shard.load([self._path(s) for s in sources],
                        source_router=Router.from_dict(msg.field("source_router", dict)),
                        router=Router.from_dict(msg.field("router", dict)),
                        checkpoint=msg.field("checkpoint", str),
                        deltas=[[self._path(s) for s in step] for step in deltas])
        return codec.encode({})

    def _path(self, value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise InputError("malformed request: a path must be a non-empty string")
        p = Path(value).resolve()
        if self.root is not None and not p.is_relative_to(self.root):
            raise InputError(f"path {value} is outside this shard's checkpoint root")
        return p
