"""The README's main command runs and reports what happened."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_reports() -> None:
    out = subprocess.run([sys.executable, "-m", "kraken.cli.main", "demo", "--steps", "30",
                          "--batch", "1024", "--capacity", "5000"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "live rows" in lines[1] and "evicted" in lines[1]
    last = lines[-1]
    assert last.startswith("done in") and "evicted" in last
    rows = [line.split() for line in lines[2:-1]]
    assert len(rows) == 10
    assert all(int(r[1].replace(",", "")) <= 5000 for r in rows)
    assert sum(int(r[3].replace(",", "")) for r in rows) > 0  # the budget forced evictions
