"""gRPC as a carrier of opaque bytes: generic unary methods, no protobuf, no pickle.

``ByteServer`` registers ``{method: handler(bytes) -> bytes}`` under a service name with
gRPC's generic handlers (identity (de)serialisation), and ``ByteClient.call(method, payload)``
sends bytes and returns the reply's bytes. Payloads are whatever the caller encodes (here
:mod:`kraken.arrayfile` containers and JSON), so this is the whole gRPC surface: the
serving push transport and any later PS service use it through these two classes. Servers
bind 127.0.0.1 by default. A failed call raises :class:`~kraken.errors.TransportError`
(a ``ConnectionError``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc

from kraken.errors import TransportError

__all__ = ["ByteClient", "ByteServer"]

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class ByteServer:
    """Serves ``handlers`` as ``/<service>/<method>`` on ``host:port`` (port 0: a free one)."""

    def __init__(self, service: str, handlers: dict[str, Callable[[bytes], bytes]], *,
                 host: str = "127.0.0.1", port: int = 0, workers: int = 2) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   options=_OPTIONS)
        methods = {name: grpc.unary_unary_rpc_method_handler(self._wrap(fn))
                   for name, fn in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, methods),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise TransportError(f"cannot listen on {address}")
        self.address = f"{host}:{self.port}"

    @staticmethod
    def _wrap(fn: Callable[[bytes], bytes]) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            return fn(request)
        return handle

    def start(self) -> ByteServer:
        self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()


class ByteClient:
    """Calls methods of ``service`` at ``target`` (``host:port``)."""

    def __init__(self, target: str, service: str, *, timeout: float = 10.0) -> None:
        self.target, self.service, self.timeout = target, service, timeout
        self._channel = grpc.insecure_channel(target, options=_OPTIONS)

    def call(self, method: str, payload: bytes, timeout: float | None = None) -> bytes:
        stub = self._channel.unary_unary(f"/{self.service}/{method}")
        try:
            return stub(payload, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            raise TransportError(f"{self.target}: {method} failed: {code}") from exc

    def close(self) -> None:
        self._channel.close()
