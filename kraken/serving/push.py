"""gRPC push: the trainer sends every version to one or more servers as it publishes it.

Service ``kraken.serving.Replica`` (generic byte methods of :mod:`kraken.ps.wire`)::

    Apply(ModelVersion.to_bytes())  -> JSON {"status": "ok" | "gap" | "error", "version": v,
                                             "message": "..."}
    Status(b"")                     -> JSON {"ready": bool, "version": v, "lineage": "..."}

Trainer side, :class:`PushTransport` (a :class:`~kraken.serving.publisher.Transport`): one
sender thread and a bounded queue per server, so a slow or dead server never blocks
training. A server that answers ``gap`` or ``error``, cannot be reached, or whose queue
overflows is marked as needing a snapshot and gets no deltas until then;
``wants_snapshot()`` then asks the publisher for one (at most every ``retry_interval``
seconds per server), which is sent to the servers that need it. A server that starts late
is caught up the same way. Server side, :class:`PushReceiver` applies what arrives to a
:class:`Replica` (no I/O; :func:`serve_push` puts it behind gRPC).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kraken.errors import KrakenError, TransportError, VersionGapError
from kraken.ps.wire import ByteClient, ByteServer, Security
from kraken.serving.replica import Replica
from kraken.serving.version import ModelVersion

__all__ = ["PushReceiver", "PushTransport", "SERVICE", "serve_push"]

SERVICE = "kraken.serving.Replica"


class PushReceiver:
    """Applies pushed versions to ``replica``; counts gaps and errors (for ``/v1/model``)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.gaps = 0
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()

    def apply(self, payload: bytes) -> bytes:
        with self._lock:  # versions from one publisher arrive in order; apply them so
            try:
                self.replica.apply(ModelVersion.from_bytes(payload))
                status, message = "ok", ""
            except VersionGapError as exc:
                self.gaps += 1
                status, message = "gap", str(exc)
            except KrakenError as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                status, message = "error", self.last_error
        return json.dumps({"status": status, "version": self.replica.version,
                           "message": message}).encode()

    def status(self, payload: bytes = b"") -> bytes:
        r = self.replica
        return json.dumps({"ready": r.ready, "version": r.version,
                           "lineage": r.lineage}).encode()

    def sync_status(self) -> dict[str, Any]:
        return {"mode": "push", "gaps": self.gaps, "errors": self.errors,
                "last_error": self.last_error}


def serve_push(replica: Replica, host: str = "127.0.0.1", port: int = 0, *,
               security: Security | None = None) -> tuple[ByteServer, PushReceiver]:
    """A started gRPC server applying pushed versions to ``replica``.

    As for the shards (:class:`~kraken.ps.wire.Security`): loopback only unless
    ``security`` has a token; with one, a pusher without it is refused (UNAUTHENTICATED)
    before anything is decoded; with ``tls_cert``/``tls_key``, pushes travel over TLS.
    """
    receiver = PushReceiver(replica)
    server = ByteServer(SERVICE, {"Apply": receiver.apply, "Status": receiver.status},
                        host=host, port=port, workers=2, security=security).start()
    return server, receiver


class _Target:
    """One server: a queue of payloads and the thread that sends them in order."""

    def __init__(self, address: str, client: ByteClient, queue_size: int,
                 retry_interval: float) -> None:
        self.address, self.client = address, client
        self.retry_interval = retry_interval
        self.q: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=queue_size)
        self.lock = threading.Lock()
        self.last_enqueued = -1  # version of the last payload queued (-1: none yet)
        self.needs_snapshot = False
        self.retry_at = 0.0
        self.acked = 0
        self.sent = 0
        self.failures = 0
        self.last_error = ""
        self.thread = threading.Thread(target=self._run, name=f"kraken-push-{address}",
                                       daemon=True)
        self.thread.start()

    def fail(self, why: str) -> None:
        with self.lock:
            self.failures += 1
            self.last_error = why
            self.needs_snapshot = True
            self.retry_at = time.monotonic() + self.retry_interval
            while True:  # queued deltas cannot apply any more
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
                self.q.task_done()
                if item is None:
                    self.q.put_nowait(None)
                    break

    def enqueue(self, version: int, payload: bytes) -> None:
        try:
            self.q.put_nowait((version, payload))
            self.last_enqueued = version
        except queue.Full:
            self.needs_snapshot = True
            self.retry_at = time.monotonic()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                self.q.task_done()
                return
            try:
                self._send(*item)
            finally:
                self.q.task_done()

    def _send(self, version: int, payload: bytes) -> None:
        try:
            reply = json.loads(self.client.call("Apply", payload))
        except (TransportError, ValueError) as exc:
            self.fail(str(exc))
            return
        self.sent += 1
        if reply.get("status") == "ok":
            self.acked = int(reply.get("version", version))
        else:
            self.fail(f"{reply.get('status')}: {reply.get('message', '')}")


class PushTransport:
    """Pushes versions to servers at ``targets`` (``host:port`` each; see the module).

    ``security`` (token, TLS root certificate) is that of the servers' ``serve_push``.
    """

    def __init__(self, targets: Sequence[str], *, timeout: float = 10.0, queue_size: int = 16,
                 retry_interval: float = 5.0,
                 client_factory: Callable[[str], ByteClient] | None = None,
                 security: Security | None = None) -> None:
        make = client_factory or (lambda t: ByteClient(t, SERVICE, timeout=timeout,
                                                       security=security))
        self.targets = [_Target(t, make(t), queue_size, retry_interval) for t in targets]

    def latest_version(self) -> int:
        """The newest version any reachable server holds (so numbering never goes back)."""
        best = 0
        for t in self.targets:
            try:
                best = max(best, int(json.loads(t.client.call("Status", b"", timeout=2.0))
                                     ["version"]))
            except (TransportError, ValueError, KeyError):
                continue
        return best

    def wants_snapshot(self) -> bool:
        now = time.monotonic()
        return any(t.needs_snapshot and t.retry_at <= now for t in self.targets)

    def send(self, version: ModelVersion) -> None:
        payload = version.to_bytes()
        now = time.monotonic()
        for t in self.targets:
            with t.lock:
                if version.is_snapshot:
                    due = t.needs_snapshot and t.retry_at <= now
                    if due or t.last_enqueued < version.version:
                        t.needs_snapshot = False
                        t.enqueue(version.version, payload)
                elif not t.needs_snapshot:
                    if t.last_enqueued == version.base:
                        t.enqueue(version.version, payload)
                    else:
                        t.needs_snapshot = True

    def stats(self) -> list[dict[str, Any]]:
        return [{"target": t.address, "acked": t.acked, "sent": t.sent,
                 "failures": t.failures, "needs_snapshot": t.needs_snapshot,
                 "last_error": t.last_error} for t in self.targets]

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queue is empty (sent or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t.q.unfinished_tasks == 0 for t in self.targets):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        for t in self.targets:
            try:
                t.q.put(None, timeout=5)
            except queue.Full:
                pass
        for t in self.targets:
            t.thread.join(timeout=10)
            t.client.close()
