"""``kraken/_jit.py``'s process-wide OpenMP spin: set when the user set nothing, else left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1])

_SHOW = ("import kraken, os; "
         "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")


@pytest.mark.parametrize("user, seen", [
    ({}, "1000 None"),
    ({"GOMP_SPINCOUNT": "5000"}, "5000 None"),
    ({"OMP_WAIT_POLICY": "active"}, "None active"),
])
def test_the_spin_setting_defers_to_the_user(user: dict[str, str], seen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _SHOW], env={**env, **user, "PYTHONPATH": ROOT},
                         check=True, capture_output=True, text=True)
    assert out.stdout.split("\n")[0] == seen
