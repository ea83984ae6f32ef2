"""``kraken train --publish DIR --push ADDR`` with ``kraken serve`` as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT

KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def test_train_publishes_and_serve_answers(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nsource = "synthetic"\nn_records = 6000\nn_fields = 3\nn_dense = 2\n'
                   '[model]\nname = "fm"\n[tables.emb]\ndim = 4\ncapacity = 20000\n'
                   '[trainer]\nbatch_size = 512\n')
    model_dir = tmp_path / "model"
    pushed = subprocess.Popen([*KRAKEN, "serve", "--push-port", "0", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = pushed.stdout.readline() if pushed.stdout else ""
        assert "receiving pushes on 127.0.0.1:" in line, (line, pushed.stderr)
        push_url, push_addr = line.split()[2], line.split("pushes on ")[1].split(";")[0]
        assert httpx.get(f"{push_url}/readyz", timeout=10).status_code == 503
        out = subprocess.run([*KRAKEN, "train", "--config", str(cfg), "--run-dir",
                              str(tmp_path / "run"), "--publish", str(model_dir),
                              "--push", push_addr],
                             capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert "published" in out.stdout and push_addr in out.stdout
        last = int(out.stdout.split("last ")[1].split()[0].rstrip(","))
        info = httpx.get(f"{push_url}/v1/model", timeout=10).json()
        assert info["version"] == last and info["sync"]["mode"] == "push", info
    finally:
        pushed.send_signal(signal.SIGTERM)
        pushed.wait(timeout=30)
    assert pushed.returncode == 0
    proc = subprocess.Popen([*KRAKEN, "serve", "--model-dir", str(model_dir), "--port", "0",
                             "--precision", "bf16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "fixed; version" in line, (line, proc.stderr)
        url = line.split()[2]
        assert httpx.get(f"{url}/readyz", timeout=10).json()["ready"]
        r = httpx.post(f"{url}/v1/predict", timeout=10,
                       json={"context": {"c0": 5, "d0": 1.0}, "candidates": [{"c1": 1},
                                                                           {"c1": 2, "c2": 3}]})
        assert r.status_code == 200 and len(r.json()["scores"]) == 2, r.text
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert info["model"] == "fm" and info["tables"]["emb"]["precision"] == "bf16"
        assert info["sync"]["following"] is False
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    bad = subprocess.run([*KRAKEN, "serve", "--model-dir", str(tmp_path), "--port", "-5"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
