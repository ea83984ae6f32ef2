"""Running the serving app under uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from kraken.errors import LifecycleError

__all__ = ["HttpServer", "bind"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Created with ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` on accepted
    connections only for such sockets, and without it a response written as headers then
    body waits for the client's delayed ACK (40 ms) on every keep-alive request.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """``app`` served by uvicorn on an already bound socket; ``url`` is where it listens."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", access_log: bool = False) -> None:
        self.sock = bind(host, port)
        h, p = self.sock.getsockname()[:2]
        self.host, self.port = h, p
        self.url = f"http://{'[' + h + ']' if ':' in h else h}:{p}"
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log,
                                lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve in this thread until interrupted (SIGINT / SIGTERM)."""
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> HttpServer:
        """Serve in a daemon thread; returns once the server accepts connections.

        Raises :class:`LifecycleError` if it is already running, or if it is not up within
        ``timeout`` seconds (its thread exited, e.g. the app failed to start).
        """
        if self._thread is not None:
            raise LifecycleError(f"the HTTP server at {self.url} is already running")
        thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                  name="kraken-http", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not thread.is_alive() or time.monotonic() >= deadline:
                why = ("its thread exited while starting" if not thread.is_alive()
                       else f"it was not up after {timeout:g} s")
                self.stop()
                raise LifecycleError(f"the HTTP server at {self.url} did not start: {why}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.sock.close()
