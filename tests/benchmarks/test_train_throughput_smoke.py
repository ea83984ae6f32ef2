"""``benchmarks/train_throughput.py``: the Kraken child with ``--profile`` and the TorchRec
child run at tiny sizes (``--quick``), so neither can rot.

Speed is not asserted. What is checked: the child's record has its fields and the
table it reports is consistent (admitted = live + evicted); the profile prints every
part of the step, and no part, nor what a parent spent outside its listed parts, is
negative.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


def _child(variant: str, *extra: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--child", variant, *extra],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def test_the_kraken_child_profiles_its_step() -> None:
    p = _child("kraken", "--profile")
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    assert rec["variant"] == "kraken" and rec["samples_per_s"] > 0
    assert rec["admitted"] == rec["live_rows"] + rec["evicted"] > 0
    rows = re.findall(r"^\| ((?:&nbsp;)*)([^|]+?) \| \**([-\d.]+)\** \|", p.stderr, re.M)
    parts = {(len(indent) > 0, label.strip(" *")): float(ms) for indent, label, ms in rows}
    for label in ("pull (PS, train=True)", "backward", "push (PS)", "records",
                  "progressive metrics update", "trainer loop, Python and the rest"):
        assert (False, label) in parts, p.stderr
    assert parts[(False, "step (wall, profiled)")] > 0
    # every part, and every "rest of" a parent (the parent minus its listed parts, so
    # parts counted twice would show here), is a time: >= 0 up to the printed rounding
    bad = {k: v for k, v in parts.items() if v < -0.15 and k[1] != "trainer loop, Python "
           "and the rest"}
    assert not bad, p.stderr


@pytest.mark.skipif(importlib.util.find_spec("torchrec") is None,
                    reason="TorchRec is not installed (pip install kraken-rec[bench])")
def test_the_torchrec_child_trains() -> None:
    rec = json.loads(_child("torchrec").stdout.strip().splitlines()[-1])
    assert rec["variant"] == "torchrec" and rec["samples_per_s"] > 0 and rec["peak_rss"] > 0
