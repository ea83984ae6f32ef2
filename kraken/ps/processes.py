"""Shard processes on this machine: ``kraken ps`` started, awaited, killed and stopped.

Used by ``kraken launch``, the benchmarks and the tests, so every one of them starts
shards the way a user does. Each shard prints ``... ready on HOST:PORT`` once it
listens; :class:`ShardProcesses` waits for that line, keeps reading the shard's output
(so a shard never blocks on a full pipe), and stops every shard on :meth:`stop`, on
leaving a ``with`` block, or when starting one of them fails.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kraken.errors import TransportError

__all__ = ["ShardProcesses"]

_KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


class ShardProcesses:
    """``n`` shards of the run file ``config``; ``addresses[i]`` is shard ``i``'s.

    Args:
        config: the run's TOML or JSON file (its tables and ``[ps]`` section).
        n: shards to start (``--of n``), on free loopback ports.
        extra: further ``kraken ps`` arguments (``--checkpoint-root``, ``--token-file``).
        timeout: seconds to wait for each shard to be ready.
        env: environment of the shard processes (default: this process's).
        echo: write the shards' later output to this process's stderr, prefixed.
    """

    def __init__(self, config: str | Path, n: int, *, extra: Sequence[str] = (),
                 timeout: float = 120.0, env: dict[str, str] | None = None,
                 echo: bool = False) -> None:
        self.config, self.n, self.extra = str(config), n, list(extra)
        self.env, self.echo, self.timeout = env, echo, timeout
        self.procs: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []
        self.logs: list[list[str]] = []
        try:
            for i in range(n):
                self.procs.append(self._spawn(i))
                self.logs.append([])
            self.addresses = [self._ready(i) for i in range(n)]
        except BaseException:
            self.stop()
            raise

    def _spawn(self, i: int, port: int = 0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*_KRAKEN, "ps", "--config", self.config, "--shard", str(i), "--of", str(self.n),
             "--port", str(port), *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)

    def _ready(self, i: int) -> str:
        proc, log = self.procs[i], self.logs[i]
        found: list[str] = []

        def read() -> None:
            for line in proc.stdout or ():
                log.append(line)
                if not found and " ready on " in line:
                    found.append(line.rsplit(" ready on ", 1)[1].strip())
                elif found and self.echo:
                    sys.stderr.write(f"[shard {i}] {line}")

        threading.Thread(target=read, daemon=True, name=f"shard{i}-output").start()
        deadline = time.monotonic() + self.timeout
        while not found and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not found:
            raise TransportError(f"shard {i} did not start within {self.timeout:.0f} s: "
                                 f"{''.join(log)[-2000:]}")
        return found[0]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def dead(self) -> list[int]:
        """Shards whose process has exited."""
        return [i for i, p in enumerate(self.procs) if p.poll() is not None]

    def kill(self, i: int) -> None:
        """SIGKILL shard ``i`` (a crash) and reap it."""
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(15)

    def restart(self, i: int) -> str:
        """Start shard ``i`` again on its old port, with fresh state; its new address."""
        port = int(self.addresses[i].rsplit(":", 1)[1])
        self.procs[i] = self._spawn(i, port)
        self.logs[i] = []
        self.addresses[i] = self._ready(i)
        return self.addresses[i]

    def stop(self) -> None:
        """SIGTERM every shard still running, then SIGKILL any that does not exit."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(15)

    def __enter__(self) -> ShardProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
