"""``benchmarks/table_ops.py --quick`` still runs every section (so the script cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "table_ops.py"


def test_table_ops_quick_runs_every_section(tmp_path: Path) -> None:
    out_json = tmp_path / "results.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out_json)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    for title in ("== lookup of present keys", "== insert-or-find", "== apply_gradients",
                  "== bytes per live row", "== RowWiseAdaGrad bytes / Adam bytes",
                  "wall time"):
        assert title in p.stdout, f"missing section {title!r}:\n{p.stdout[-3000:]}"
    for section in ("lookup", "insert", "optim", "memory", "demo"):
        assert f"[{section}: " in p.stdout
    results = json.loads(out_json.read_text())
    assert set(results) >= {"meta", "lookup", "insert", "optim", "memory", "demo"}
    assert results["lookup"]["dim16_zipf"]["kraken_over_index_select"]["median"] > 0
    assert results["optim"]["check_max_abs_diff"]["Adam"] < 1e-4
