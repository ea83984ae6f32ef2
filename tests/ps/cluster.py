"""Real shard processes for tests: ``kraken ps`` started on free ports, always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kraken.table import TableConfig

ROOT = Path(__file__).resolve().parents[2]
KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_run_config(path: Path, tables: Mapping[str, TableConfig],
                     ps: Mapping[str, Any] | None = None, model: str = "deepfm") -> Path:
    """A run file whose tables are ``tables`` (plus the data/model a run needs)."""
    lines = ['[data]', 'source = "synthetic"', 'n_records = 1000', '',
             '[model]', f'name = "{model}"', '']
    for name, cfg in tables.items():
        lines.append(f"[tables.{name}]")
        for k, v in cfg.to_dict().items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    if ps:
        lines.append("[ps]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in ps.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Cluster:
    """``n`` shard processes of the run file ``config``; ``addresses[i]`` is shard i."""

    def __init__(self, config: Path, n: int, *, extra: list[str] | None = None,
                 timeout: float = 60.0) -> None:
        self.config, self.n, self.extra = config, n, list(extra or [])
        self.procs: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = []
        self.logs: list[list[str]] = []
        try:
            for i in range(n):
                self.procs.append(self._spawn(i))
            self.addresses = [self._ready(i, timeout) for i in range(n)]
        except BaseException:
            self.stop()
            raise

    def _spawn(self, i: int, port: int = 0) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(
            [*KRAKEN, "ps", "--config", str(self.config), "--shard", str(i), "--of",
             str(self.n), "--port", str(port), *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)

    def _ready(self, i: int, timeout: float) -> str:
        proc = self.procs[i]
        lines: list[str] = []
        found: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if " ready on " in line and not found:
                    found.append(line.rsplit(" ready on ", 1)[1].strip())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if len(self.logs) <= i:
            self.logs.append(lines)
        else:
            self.logs[i] = lines
        if not found:
            raise RuntimeError(f"shard {i} did not start: {''.join(lines)[-2000:]}")
        return found[0]

    def kill(self, i: int) -> None:
        """SIGKILL shard ``i`` (a crash)."""
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def restart(self, i: int, timeout: float = 60.0) -> str:
        """Start shard ``i`` again on its old port (fresh state)."""
        port = int(self.addresses[i].rsplit(":", 1)[1])
        self.procs[i] = self._spawn(i, port)
        self.addresses[i] = self._ready(i, timeout)
        return self.addresses[i]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
