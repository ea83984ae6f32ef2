"""A local ``redis-server`` process: for ``kraken demo --realtime`` and the tests.

Started on a free port of 127.0.0.1 (or the one given) with its files in a directory and
its append-only file on (every acknowledged write survives a restart), and stopped by
``stop`` or leaving the ``with`` block. Production runs point ``[log] url`` at their own
Redis instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from kraken.errors import ConfigError, LifecycleError

__all__ = ["INSTALL", "RedisServer", "redis_server_binary"]

INSTALL = ("redis-server is not installed: `sudo apt-get install -y redis-server` "
           "(Debian/Ubuntu), `brew install redis` (macOS); `make test` installs it when "
           "run as root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    """The path of ``redis-server`` (``$KRAKEN_REDIS_SERVER`` or on ``PATH``), or None."""
    return os.environ.get("KRAKEN_REDIS_SERVER") or shutil.which("redis-server")


class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` with its files under ``dir``.

    ``stop`` (SIGTERM, then SIGKILL) and ``start`` may be called again to drill a
    restart: the append-only file keeps every acknowledged write across it.
    """

    def __init__(self, directory: str | os.PathLike[str], binary: str | None = None,
                 port: int = 0) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise ConfigError(INSTALL)
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            raise ConfigError(f"redis-server: {found!r} ($KRAKEN_REDIS_SERVER or the binary "
                              f"given) is not an executable file; {INSTALL}")
        self.binary = found
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING (LifecycleError if it does not)."""
        if self.proc is not None and self.proc.poll() is None:
            raise LifecycleError(f"redis-server on port {self.port} is already running")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--protected-mode", "no", "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        # its own session: a Ctrl-C at the terminal reaches the caller, which stops the
        # server after its last write, not the server first
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                logfile = self.dir / "redis.log"
                log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
                code = self.proc.returncode
                self.proc = None
                raise LifecycleError(f"redis-server exited with {code}: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise LifecycleError(f"redis-server did not answer on port {self.port} in {timeout_s} s")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``: no chance to write anything more)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
