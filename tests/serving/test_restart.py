"""``kraken serve --follow`` killed (SIGKILL) mid-stream and restarted catches up without a gap."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.conftest import ROOT
from tests.serving.helpers import probe_records, publishing_trainer, reference_scores

RECORDS = probe_records(16, seed=3)


def _start(model_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "kraken.cli.main", "serve", "--model-dir",
                             str(model_dir), "--follow", "--port", "0", "--poll-interval", "0.02",
                             "--precision", "auto"],  # exact scores: training precision
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("kraken serve: http://127.0.0.1:"), (line, proc.stderr)
    return proc, line.split()[2]


def _model(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/model", timeout=10).json()


def _wait(url: str, cond: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _model(url)
        if cond(info):
            return info
        time.sleep(0.05)
    raise AssertionError(f"timed out; server at {_model(url)['version']}")


def test_killed_server_restarts_from_a_snapshot_and_applies_every_delta(tmp_path: Path) -> None:
    tr, pub = publishing_trainer(tmp_path, sync_interval=0.1, snapshot_interval=1.0,
                                 n_records=2_000_000)
    trainer = threading.Thread(target=tr.run)
    proc, url = _start(tmp_path)
    try:
        trainer.start()
        before = _wait(url, lambda i: i["ready"] and i["version"] >= 5)["version"]
        proc.kill()
        proc.wait(timeout=10)
        dead_at = pub.version
        _wait_for_publisher(pub, dead_at + 10)  # the trainer keeps publishing meanwhile
        proc, url = _start(tmp_path)
        info = _wait(url, lambda i: i["ready"] and i["version"] >= pub.version - 1)
        tr.request_stop("test")
        trainer.join(timeout=60)
        info = _wait(url, lambda i: i["version"] == pub.version)
        final = httpx.post(f"{url}/v1/predict", json={"instances": RECORDS}, timeout=10).json()
    finally:
        tr.request_stop("test")
        proc.kill()
        proc.wait(timeout=10)
    assert info["version"] > before and info["snapshots_loaded"] == 1
    assert info["sync"]["gaps"] == 0 and info["sync"]["errors"] == 0
    seen = [v for v, _, _ in info["history"]]
    assert seen == list(range(seen[0], seen[-1] + 1)), "versions skipped after the restart"
    np.testing.assert_array_equal(np.float32(final["scores"]), reference_scores(tr, RECORDS))


def _wait_for_publisher(pub: Any, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pub.version < version and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pub.version >= version
