"""The command line, run as a user runs it: subprocesses, real files, real signals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kraken.cli.demo import demo_config, synthetic_auc_ceiling
from kraken.cli.main import build_parser
from kraken.cli.report import load_records, per_table
from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.train.metrics import exact_auc
from tests.conftest import ROOT
from tests.data.fixtures import criteo_lines, write_lines

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
    ceiling = float(text.split("(ceiling ")[1].split(":")[0])  # beside the AUC it bounds
    auc = float(text.split("progressive AUC")[1].split()[0])
    assert 0.5 < auc < ceiling < 1.0
    assert "samples          20,000" in text
    assert "serving on http://127.0.0.1:" in text and "| serve v" in text  # lag beside progress
    assert "served version" in text and "POST /v1/predict -> score" in text
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["kind"] == "final" and recs[-1]["samples"] == 20_000


def _config(tmp_path: Path, n: int, data: str | None = None) -> Path:
    cfg = tmp_path / "run.toml"
    data = data or f"""
[data]
source = "synthetic"
n_records = {n}
n_fields = 4
vocab = 5000
"""
    cfg.write_text(data + """

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
    assert _run("train", "--config", str(cfg), "--run-dir", str(tmp_path / "a")
                ).returncode == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a second run, as far as plots go
    out = _run("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
               str(tmp_path / "r.png"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = _run("report", str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr


def test_the_module_docstring_lists_the_commands_that_exist() -> None:
    import kraken.cli.main as main_mod

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    listed = [line.split()[1] for line in (main_mod.__doc__ or "").splitlines()
              if line.strip().startswith("kraken ")]
    assert sorted(listed) == sorted(sub.choices)


def test_malformed_records_print_one_line_each_and_are_counted(tmp_path: Path) -> None:
    lines = criteo_lines(600)
    lines[10:10] = ["garbage"]
    lines[300:300] = ["1\t2"]
    data = write_lines(tmp_path / "train.txt", lines)
    cfg = _config(tmp_path, 0, data=f'[data]\nsource = "criteo"\npath = "{data}"\n')
    out = _run("train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"kraken: {data}:11: skipped malformed Criteo record: "
        "expected 40 tab-separated fields, got 1",
        f"kraken: {data}:301: skipped malformed Criteo record: "
        "expected 40 tab-separated fields, got 2"]
    assert "skipped records  2 malformed" in out.stdout
    final = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert final[-1]["kind"] == "final" and final[-1]["skipped"] == 2


def test_a_corrupt_newest_checkpoint_names_the_intact_one_to_resume_from(tmp_path: Path) -> None:
    cfg, run_dir = _config(tmp_path, 8192), tmp_path / "run"
    assert _run("train", "--config", str(cfg), "--run-dir", str(run_dir)).returncode == 0
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("ckpt-*"))
    assert len(ckpts) == 3
    newest, older = ckpts[-1], ckpts[-2]
    table = next((newest / "tables" / "shard-00000").iterdir())
    table.write_bytes(table.read_bytes()[:-10])  # truncated
    out = _run("train", "--config", str(cfg), "--run-dir", str(run_dir), "--resume")
    assert out.returncode == 2
    assert (f"{newest}: file tables/shard-00000/{table.name} is missing or has the wrong size"
            in out.stderr)
    assert f"resume from it with --resume-from {older.name}" in out.stderr
    assert "Traceback" not in out.stderr
    again = _run("train", "--config", str(cfg), "--run-dir", str(run_dir),
                 "--resume-from", older.name)
    assert again.returncode == 0, again.stderr
    samples = int(json.loads((older / "manifest.json").read_text())["samples"])
    assert f"resumed at {samples:,} samples" in again.stdout
    missing = _run("train", "--config", str(cfg), "--run-dir", str(run_dir),
                   "--resume-from", "ckpt-7")
    assert missing.returncode == 2 and "no checkpoint 'ckpt-7'" in missing.stderr


def test_report_reads_the_bytes_of_each_table(tmp_path: Path) -> None:
    recs = [{"kind": "window", "samples": 10, "tables": {"emb": {"memory_bytes": 100},
                                                        "wide": {"memory_bytes": 7}}},
            {"kind": "window", "samples": 20, "tables": {"emb": {"memory_bytes": 300}}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    got = per_table(load_records(tmp_path), "memory_bytes")
    assert got["emb"] == [100.0, 300.0]
    assert got["wide"][0] == 7.0 and got["wide"][1] != got["wide"][1]  # NaN: not recorded


def test_the_demo_ceiling_is_the_true_models_auc_on_the_same_samples() -> None:
    config = demo_config("synthetic", "", 5000, "deepfm")
    stream = SyntheticStream(SyntheticConfig(n_records=5000, vocab=200_000))
    b = next(stream.batches(3000))
    want = exact_auc(b.label, stream.true_logit(b.keys, b.dense, np.arange(3000)))
    got = synthetic_auc_ceiling(config, 3000, batch_size=1000 + 7)
    assert abs(got - want) < 1e-4
