"""``RemoteShard``: a shard process reached over gRPC, with the verbs of a local Shard.

Calls that fail in transport (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, a reset connection)
are retried with exponential backoff, each retry carrying the same request id, so a
training pull or a push whose reply was lost is answered from the shard's reply window
rather than applied twice. Past the retry budget the call raises
:class:`~kraken.errors.TransportError` naming the shard and its address. Errors the shard
answers (bad input, unknown table, ...) are raised at once as their own
:class:`~kraken.errors.KrakenError` subclass and never retried.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kraken.config import check_int, check_positive
from kraken.errors import TransportError
from kraken.ps import codec
from kraken.ps.router import Router
from kraken.ps.server import SERVICE
from kraken.ps.shard import ShardInfo
from kraken.ps.wire import ByteClient, Security
from kraken.table import TableDelta, TableStats
from kraken.types import F32, Keys

__all__ = ["RemoteShard"]

_RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL", "ABORTED"}


class RemoteShard:
    """Shard ``index`` at ``address`` (``host:port``).

    Args:
        timeout: seconds per attempt (checkpoint calls get ``save_timeout``).
        retries: further attempts after a transport failure.
        backoff: seconds before the first retry, doubled each time.
    """

    def __init__(self, address: str, *, index: int | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.2, save_timeout: float = 600.0,
                 security: Security | None = None) -> None:
        check_positive("ps.timeout", timeout)
        check_int("ps.retries", retries, lo=0)
        self.address, self.index = address, index
        self.timeout, self.retries, self.backoff, self.save_timeout = (
            timeout, retries, backoff, save_timeout)
        self._client = ByteClient(address, SERVICE, timeout=timeout, security=security)
        self._incarnation: str | None = None
        self._client_id = uuid.uuid4().hex[:12]
        self._seq = itertools.count()

    def _request_id(self) -> str:
        """A new id for a call that changes state; every retry of that call reuses it."""
        return f"{self._client_id}-{next(self._seq)}"

    @property
    def name(self) -> str:
        return f"shard {self.index if self.index is not None else '?'} at {self.address}"

    def _call(self, method: str, payload: bytes, timeout: float | None = None) -> codec.Message:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                reply = self._client.call(method, payload, timeout=timeout)
                break
            except TransportError as exc:
                code = getattr(exc, "code", "UNKNOWN")
                if code not in _RETRYABLE or attempt == self.retries:
                    raise TransportError(
                        f"{self.name}: {method} failed after {attempt + 1} attempt(s): "
                        f"{code}") from exc
                time.sleep(delay)
                delay *= 2
        msg = codec.decode(reply, f"{self.name} {method} reply")
        codec.raise_error(msg, self.name)
        seen = msg.meta.get("incarnation")
        if seen is not None:
            if self._incarnation is None:
                self._incarnation = seen
            elif seen != self._incarnation:
                raise TransportError(f"{self.name} restarted and lost its state; resume from "
                                     "the last complete checkpoint")
        return msg

    # -- the verbs of a Shard ------------------------------------------------------------

    def info(self) -> ShardInfo:
        meta = self._call("Info", codec.encode({})).meta
        try:
            return ShardInfo(**meta)
        except TypeError as exc:
            raise TransportError(f"{self.name}: not a compatible shard: {exc}") from exc

    def pull(self, keys: Mapping[str, Keys], *, train: bool = False, now: int | None = None,
             request_id: str | None = None) -> dict[str, F32]:
        names = list(keys)
        if train and request_id is None:
            request_id = self._request_id()
        payload = codec.encode({"tables": names, "train": train, "now": now,
                                "request_id": request_id},
                               {f"keys/{n}": _keys(k) for n, k in keys.items()})
        msg = self._call("Pull", payload)
        return {n: msg.arrays[f"rows/{n}"] for n in names}

    def push(self, grads: Mapping[str, tuple[Keys, F32]], now: int, *,
             request_id: str | None = None) -> None:
        arrays = {}
        for n, (k, g) in grads.items():
            arrays[f"keys/{n}"], arrays[f"grads/{n}"] = _keys(k), g
        self._call("Push", codec.encode({"tables": list(grads), "now": now,
                                         "request_id": request_id or self._request_id()},
                                        arrays))

    def evict(self, now: int | None = None) -> dict[str, int]:
        return dict(self._call("Evict", codec.encode({"now": now})).meta["evicted"])

    def stats(self) -> dict[str, TableStats]:
        return codec.stats_from_json(self._call("Stats", codec.encode({})).meta["stats"])

    def delta(self, table: str, since: int) -> TableDelta:
        return codec.decode_delta(self._call("Delta", codec.encode({"table": table,
                                                                    "since": since})))

    def snapshot(self, table: str) -> TableDelta:
        return codec.decode_delta(self._call("Snapshot", codec.encode({"table": table})))

    def save(self, directory: str | Path, since: Mapping[str, int] | None = None
             ) -> dict[str, dict[str, int]]:
        msg = self._call("Save", codec.encode({"directory": str(Path(directory).resolve()),
                                               "since": None if since is None
                                               else {n: int(v) for n, v in since.items()}}),
                         timeout=self.save_timeout)
        return dict(msg.meta["files"])

    def load(self, sources: list[str | Path], *, source_router: Router, router: Router,
             checkpoint: str, deltas: Sequence[Sequence[str | Path]] = ()) -> None:
        self._call("Load", codec.encode({"sources": [str(Path(s).resolve()) for s in sources],
                                         "source_router": source_router.to_dict(),
                                         "router": router.to_dict(),
                                         "checkpoint": checkpoint,
                                         "deltas": [[str(Path(s).resolve()) for s in step]
                                                    for step in deltas]}),
                   timeout=self.save_timeout)

    def close(self) -> None:
        self._client.close()


def _keys(k: np.ndarray) -> np.ndarray:
    k = np.ascontiguousarray(np.asarray(k).reshape(-1))
    return k.view(np.int64) if k.dtype == np.uint64 else k.astype(np.int64, copy=False)
