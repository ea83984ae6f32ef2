"""The command line, run as a user runs it: subprocesses, real files, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KRAKEN, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_demo_trains_and_summarises(tmp_path: Path) -> None:
    out = _run("demo", "--samples", "20000", "--run-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "kraken demo: model deepfm" in text
    assert "progressive AUC" in text and "table emb" in text
    assert "samples          20,000" in text
    assert "serving on http://127.0.0.1:" in text and "| serve v" in text  # lag beside progress
    assert "served version" in text and "POST /v1/predict -> score" in text
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["kind"] == "final" and recs[-1]["samples"] == 20_000


def _config(tmp_path: Path, n: int) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[data]
source = "synthetic"
n_records = {n}
n_fields = 4
vocab = 5000

[model]
name = "fm"

[tables.emb]
dim = 4
capacity = 20000

[trainer]
batch_size = 256
window = 5000
log_every_s = 0.2
checkpoint_every_samples = 2048
""")
    return cfg


def test_train_stops_cleanly_on_sigterm_and_resumes(tmp_path: Path) -> None:
    cfg, run_dir = _config(tmp_path, 3_000_000), tmp_path / "run"
    proc = subprocess.Popen([*KRAKEN, "train", "--config", str(cfg), "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "LATEST").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped          signal SIGTERM" in out
    stopped_at = int(out.split("samples          ")[1].split()[0].replace(",", ""))
    assert 0 < stopped_at < 3_000_000
    resumed = _run("train", "--config", str(cfg), "--run-dir", str(run_dir), "--resume",
                   "--max-samples", str(stopped_at + 4096))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at {stopped_at:,} samples" in resumed.stdout
    assert "max_samples reached" in resumed.stdout


def test_config_errors_exit_2_with_the_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[tables.emb]\ndim = 8\noptimizer = { type = "adam", lr = 0 }\n')
    out = _run("train", "--config", str(cfg))
    assert out.returncode == 2
    assert "tables.emb.optimizer.lr: must be > 0" in out.stderr
    assert "Traceback" not in out.stderr


def test_report_plots_runs_side_by_side(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 12_000)
    for name in ("a", "b"):
        assert _run("train", "--config", str(cfg), "--run-dir", str(tmp_path / name)
                    ).returncode == 0
    out = _run("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
               str(tmp_path / "r.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = _run("report", str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr
