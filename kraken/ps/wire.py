"""gRPC as a carrier of opaque bytes: generic unary methods, no protobuf, no pickle.

``ByteServer`` registers ``{method: handler(bytes) -> bytes}`` under a service name with
gRPC's generic handlers (identity (de)serialisation), and ``ByteClient.call(method, payload)``
sends bytes and returns the reply's bytes. Payloads are whatever the caller encodes (here
:mod:`kraken.arrayfile` containers and JSON), so this is the whole gRPC surface: the
parameter-server shards and the serving push transport use it through these two classes.
A failed call raises :class:`~kraken.errors.TransportError` (a ``ConnectionError``).

Security (:class:`Security`): servers bind 127.0.0.1 by default. Binding any other address
requires a shared token; every call then carries ``authorization: Bearer <token>`` and a
call with a wrong or missing token is refused with ``UNAUTHENTICATED`` (and logged, without
the token). TLS is gRPC's own (``ssl_server_credentials``), with a certificate and key on
the server and the certificate (or its CA) as the client's root.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from kraken.errors import ConfigError, TransportError

__all__ = ["ByteClient", "ByteServer", "Security", "is_loopback"]

_log = logging.getLogger("kraken.wire")
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_AUTH = "authorization"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Security:
    """Token and TLS settings shared by a server and its clients.

    Attributes:
        token: shared secret every call must carry (None: no token).
        tls_cert / tls_key: PEM files of the server's certificate and key; a client
            uses ``tls_cert`` as its root certificate (None: plaintext).
        tls_server_name: client only: the name the server's certificate must carry when
            it differs from the host the client dials (None: that host).
    """

    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None

    def __repr__(self) -> str:  # never print the token
        token = "***" if self.token else None
        return (f"Security(token={token}, tls_cert={self.tls_cert!r}, "
                f"tls_key={self.tls_key!r}, tls_server_name={self.tls_server_name!r})")

    @classmethod
    def from_files(cls, token_file: str | None = None, tls_cert: str | None = None,
                   tls_key: str | None = None, tls_server_name: str | None = None
                   ) -> Security:
        """Read the token from ``token_file`` (surrounding whitespace ignored)."""
        token = None
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"token file {token_file}: {exc.strerror}") from exc
            if not token:
                raise ConfigError(f"token file {token_file} is empty")
        for what, path in (("tls certificate", tls_cert), ("tls key", tls_key)):
            if path and not Path(path).is_file():
                raise ConfigError(f"{what} {path}: no such file")
        return cls(token=token, tls_cert=tls_cert, tls_key=tls_key,
                   tls_server_name=tls_server_name)

    def check_bind(self, host: str) -> None:
        """Refuse to listen beyond loopback without a token."""
        if not is_loopback(host) and not self.token:
            raise ConfigError(f"binding {host} (not loopback) requires a shared token "
                              "(--token-file); refusing to serve unauthenticated")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both a certificate and a key (--tls-cert, --tls-key)")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from exc


class ByteServer:
    """Serves ``handlers`` as ``/<service>/<method>`` on ``host:port`` (port 0: a free one).

    ``workers`` threads handle calls concurrently (handlers must be thread safe).
    """

    def __init__(self, service: str, handlers: dict[str, Callable[[bytes], bytes]], *,
                 host: str = "127.0.0.1", port: int = 0, workers: int = 2,
                 security: Security | None = None) -> None:
        sec = security or Security()
        sec.check_bind(host)
        self._token = sec.token
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   options=_OPTIONS)
        methods = {name: grpc.unary_unary_rpc_method_handler(self._wrap(name, fn))
                   for name, fn in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, methods),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if sec.tls_cert and sec.tls_key:
                creds = grpc.ssl_server_credentials(
                    [(_read(sec.tls_key, "tls key"), _read(sec.tls_cert, "tls certificate"))])
                self.port = self._server.add_secure_port(address, creds)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise TransportError(f"cannot listen on {address}")
        self.address = f"{host}:{self.port}"
        self.refused = 0  # calls refused for a missing or wrong token
        self._refused_lock = threading.Lock()

    def _wrap(self, method: str, fn: Callable[[bytes], bytes]
              ) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        token = self._token

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if token is not None:
                sent = dict(context.invocation_metadata()).get(_AUTH, "")
                if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                    with self._refused_lock:
                        self.refused += 1
                    _log.warning("refused %s from %s: %s token", method, context.peer(),
                                 "wrong" if sent else "missing")
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
            return fn(request)
        return handle

    def start(self) -> ByteServer:
        self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()


class ByteClient:
    """Calls methods of ``service`` at ``target`` (``host:port``).

    With ``security.tls_cert`` the channel is TLS with that certificate as its root, and
    the server's certificate must name the host of ``target`` (a DNS name or IP SAN);
    ``security.tls_server_name`` checks another name instead (a certificate issued for
    ``localhost`` reached as ``127.0.0.1``).
    """

    def __init__(self, target: str, service: str, *, timeout: float = 10.0,
                 security: Security | None = None) -> None:
        sec = security or Security()
        self.target, self.service, self.timeout = target, service, timeout
        self._metadata = ((_AUTH, f"Bearer {sec.token}"),) if sec.token else None
        if sec.tls_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(sec.tls_cert, "tls certificate"))
            options = list(_OPTIONS)
            if sec.tls_server_name:
                options.append(("grpc.ssl_target_name_override", sec.tls_server_name))
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=_OPTIONS)

    def call(self, method: str, payload: bytes, timeout: float | None = None) -> bytes:
        stub = self._channel.unary_unary(f"/{self.service}/{method}")
        try:
            return stub(payload, timeout=self.timeout if timeout is None else timeout,  # type: ignore[no-any-return]
                        metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            err = TransportError(f"{self.target}: {method} failed: {code}")
            err.code = getattr(code, "name", "UNKNOWN")  # type: ignore[attr-defined]
            raise err from exc

    def close(self) -> None:
        self._channel.close()
