"""Real shard processes for tests: ``kraken ps`` on free ports, always stopped."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from kraken.ps.processes import ShardProcesses
from kraken.table import TableConfig

ROOT = Path(__file__).resolve().parents[2]
KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def write_run_config(path: Path, tables: Mapping[str, TableConfig],
                     ps: Mapping[str, Any] | None = None, model: str = "deepfm") -> Path:
    """A run file (JSON) whose tables are ``tables``, plus the data and model a run needs
    (first-order weights in a table of their own: shards serve ``tables`` as given, and a
    ``wide`` table derived from ``emb`` unless given)."""
    doc = {"data": {"source": "synthetic", "n_records": 1000},
           "model": {"name": model, "wide": "table"},
           "tables": {n: c.to_dict() for n, c in tables.items()}, "ps": dict(ps or {})}
    path = path.with_suffix(".json")
    path.write_text(json.dumps(doc))
    return path


class Cluster(ShardProcesses):
    """``n`` shard processes of ``config`` running this checkout's code."""

    def __init__(self, config: Path, n: int, *, extra: list[str] | None = None,
                 timeout: float = 60.0) -> None:
        super().__init__(config, n, extra=extra or [], timeout=timeout,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))


def shards_of(run_dir: Path) -> list[psutil.Process]:
    """The live `kraken ps` processes whose checkpoint root is under ``run_dir``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "ps" in cmd and "--checkpoint-root" in cmd and str(run_dir) in cmd:
            out.append(p)
    return out
