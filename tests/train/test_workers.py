"""Many workers under real torchrun (gloo) on real shard processes: one model, one stream.

Small synthetic runs: 2 shards, 2 workers, batch 1000 per step (500-record blocks per
worker), a stream whose length is not a multiple of the step (so the ranks run out one
step apart).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from kraken.arrayfile import read_arrays
from kraken.checkpoint.manifest import Manifest
from kraken.errors import KrakenError
from tests.ps.cluster import ROOT, Cluster, shards_of

N, BLOCK = 11_300, 500  # 23 blocks: rank 0 trains 12 (the last one 300 records), rank 1 11
STEPS = 12
KRAKEN = [sys.executable, "-m", "kraken.cli.main"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _config(tmp_path: Path, n: int = N, every: int = 2_000) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[data]
source = "synthetic"
n_records = {n}
n_fields = 4
vocab = 2000

[model]
name = "fm"

[tables.emb]
dim = 8
capacity = 20000
optimizer = {{ type = "rowwise_adagrad", lr = 0.05 }}

[trainer]
batch_size = {2 * BLOCK}
window = 1000000
log_every_s = 600
checkpoint_every_samples = {every}
keep_checkpoints = 10

[ps]
evict_every = 5
""")
    return cfg


def _torchrun(cfg: Path, run_dir: Path, shards: list[str], *extra: str, workers: int = 2,
              restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(workers), "--max-restarts", str(restarts),
            "--monitor-interval", "0.2", "-m", "kraken.train", "--config", str(cfg),
            "--run-dir", str(run_dir), "--ps-shards", ",".join(shards), *extra]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV,
                         timeout=timeout)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out


def _final(run_dir: Path) -> dict:
    rec = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["kind"] == "final"
    return rec


def _part(ckpt: Path, part: str) -> dict[str, np.ndarray]:
    return read_arrays(ckpt / f"{part}.kdat")[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("shards")
    with Cluster(_config(tmp), 2) as cluster:
        yield cluster.addresses


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, shards: list[str]) -> Path:
    """The run directory of 2 ordered workers that went straight through the stream."""
    tmp = tmp_path_factory.mktemp("straight")
    _run(_torchrun(_config(tmp), tmp / "run", shards, "--ordered"))
    return tmp / "run"


def test_two_workers_train_one_model_over_the_whole_stream(straight: Path) -> None:
    final = _final(straight)
    assert final["samples"] == N and final["cumulative"]["samples"] == N
    workers = final["workers"]
    assert [w["samples"] for w in workers] == [12 * BLOCK - 200, 11 * BLOCK]  # uneven end
    assert workers[0]["dense_crc32"] == workers[1]["dense_crc32"]  # one dense model
    assert final["world"] == 2
    # the merged AUC is over every prediction of both ranks: between the two of them
    aucs = sorted(w["auc"] for w in workers)
    assert aucs[0] - 0.01 <= final["cumulative"]["auc"] <= aucs[1] + 0.01

    # a mid-run checkpoint is a cut: a prefix of the stream, every position in it
    mid = straight / "checkpoints" / "ckpt-000000000004"
    m = Manifest.read(mid)
    assert m.samples == m.stream_offset == 4 * 2 * BLOCK
    assert m.meta["workers"] == {"world": 2, "block": BLOCK, "origin": 0,
                                 "offsets": [7 * BLOCK, 8 * BLOCK]}
    assert [s["dir"] for s in m.ps["shards"]] == ["shard-00000", "shard-00001"]
    assert int(_part(mid, "metrics")["samples"][0]) == m.samples
    assert {"generator", "generator.1"} <= set(_part(mid, "rng"))


def test_a_checkpoint_of_two_workers_resumes_on_one(tmp_path: Path, straight: Path,
                                                    shards: list[str]) -> None:
    """The stream re-splits from the cut: one worker (no torchrun) trains the rest."""
    mid = straight / "checkpoints" / "ckpt-000000000004"
    c = tmp_path / "c"
    (c / "checkpoints").mkdir(parents=True)
    shutil.copytree(mid, c / "checkpoints" / mid.name)
    (c / "checkpoints" / "LATEST").write_text(mid.name)
    out = _run([sys.executable, "-m", "kraken.train", "--config", str(_config(tmp_path)),
                "--run-dir", str(c), "--ps-shards", ",".join(shards), "--resume"])
    assert "resumed at 4,000 samples (stream offset 4,000)" in out.stdout
    one = _final(c)
    assert one["samples"] == one["cumulative"]["samples"] == N
    assert abs(one["cumulative"]["auc"] - _final(straight)["cumulative"]["auc"]) < 0.01


def test_several_workers_refuse_tables_in_process(tmp_path: Path) -> None:
    from kraken.cli.train import train_and_report
    from kraken.errors import ConfigError
    from kraken.train.config import load_config

    class TwoWorkers:
        rank, world, leader = 0, 2, True

    with pytest.raises(ConfigError, match="2 workers share one model only through "
                                          "parameter-server shards"):
        train_and_report(load_config(_config(tmp_path)), tmp_path / "r",
                         group=TwoWorkers())  # type: ignore[arg-type]


def _workers(proc: subprocess.Popen[str]) -> dict[int, psutil.Process]:
    """The worker processes of a torchrun, by rank."""
    out = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            continue
        if "kraken.train" in " ".join(child.cmdline()) and "RANK" in env:
            out[int(env["RANK"])] = child
    return out


def _cut(run_dir: Path) -> int | None:
    """The stream offset of the newest committed checkpoint, or None."""
    latest = run_dir / "checkpoints" / "LATEST"
    try:
        return Manifest.read(run_dir / "checkpoints" / latest.read_text().strip()
                             ).stream_offset
    except (OSError, ValueError, KrakenError):
        return None


def _attempts(trace: Path) -> list[list[tuple[int, int]]]:
    """The blocks ``(start, end)`` each group of worker processes trained, sorted, groups
    in the order they started (a restarted group has new processes)."""
    first: dict[int, float] = {}
    blocks: dict[int, list[tuple[int, int]]] = {}
    for line in trace.read_text().splitlines():
        _, _, start, end, t, pid = line.split()
        first.setdefault(int(pid), float(t))
        blocks.setdefault(int(pid), []).append((int(start), int(end)))
    pids = sorted(first, key=first.__getitem__)
    groups = [pids[i:i + 2] for i in range(0, len(pids), 2)]
    return [sorted(b for pid in g for b in blocks[pid]) for g in groups]


def test_killed_workers_and_shards_restart_from_the_last_checkpoint(
        tmp_path: Path, straight: Path) -> None:
    """The drills, through `kraken launch --workers 2`: SIGKILL rank 1 once it trains past
    a checkpoint (torchrun restarts both workers), later SIGKILL a shard (launch restarts
    shards and workers); each time the group resumes from the last complete checkpoint.
    Every record is trained; the records trained twice are exactly those trained after
    the checkpoint resumed from; and (ordered workers) the run ends with the model of the
    run that was never killed."""
    cfg, run_dir = _config(tmp_path), tmp_path / "run"
    trace = tmp_path / "blocks.txt"
    start = straight / "checkpoints" / "ckpt-000000000002"  # the shards it holds: known
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(start, run_dir / "checkpoints" / start.name)
    (run_dir / "checkpoints" / "LATEST").write_text(start.name)
    proc = subprocess.Popen([*KRAKEN, "launch", "--config", str(cfg), "--shards", "2",
                             "--workers", "2", "--ordered", "--resume", "--max-restarts", "2",
                             "--run-dir", str(run_dir), "--trace-blocks", str(trace)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=ENV)
    killed: list[str] = []

    def past_a_new_checkpoint(after: int) -> bool:
        cut = _cut(run_dir)
        lines = trace.read_text().splitlines() if trace.is_file() else []
        return cut is not None and cut > after and \
            any(int(x.split()[2]) >= cut for x in lines)

    def drill() -> None:
        deadline = time.monotonic() + 240
        phase, cut0 = 0, 0
        while time.monotonic() < deadline and proc.poll() is None and phase < 2:
            if phase == 0 and past_a_new_checkpoint(2 * 2 * BLOCK):
                victim = _workers(proc).get(1)
                if victim is not None:
                    cut0 = _cut(run_dir) or 0
                    victim.send_signal(signal.SIGKILL)
                    killed.append("worker")
                    phase = 1
            elif phase == 1 and past_a_new_checkpoint(cut0 + 2 * 2 * BLOCK):
                shards = shards_of(run_dir)
                if shards:
                    shards[-1].send_signal(signal.SIGKILL)
                    killed.append("shard")
                    phase = 2
            time.sleep(0.02)

    killer = threading.Thread(target=drill)
    killer.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        killer.join()
    assert killed == ["worker", "shard"], (killed, err[-4000:])
    assert proc.returncode == 0, err[-8000:]
    assert "restart 1/2 from the last complete checkpoint" in err  # launch, after the shard
    assert not shards_of(run_dir), "shards outlived the launch"
    resumed = [int(x.split(" samples")[0].replace(",", "")) for x in out.split("resumed at ")[1:]]
    assert len(resumed) == 3 and resumed[0] == 2 * 2 * BLOCK
    assert all(r % (2 * BLOCK) == 0 for r in resumed)  # every cut after a whole step
    assert resumed[0] < resumed[1] < resumed[2]
    assert _final(run_dir)["samples"] == N

    attempts = _attempts(trace)
    assert len(attempts) == 3
    twice = 0
    for i, blocks in enumerate(attempts):
        # each group trains from its checkpoint on, block after block, no gap, no overlap
        assert blocks[0][0] == resumed[i]
        assert all(x[1] == y[0] for x, y in zip(blocks, blocks[1:], strict=False))
        if i + 1 < len(attempts):
            assert blocks[-1][1] > resumed[i + 1]  # killed after the next checkpoint
            again = [b for b in blocks if b[1] > resumed[i + 1]]
            assert all(s >= resumed[i + 1] for s, _ in again)  # only after the cut
            twice += sum(e - s for s, e in again)
        else:
            assert blocks[-1][1] == N
    print(f"records trained twice: {twice} (cuts {resumed})")

    # nothing the killed groups did after their cut survives in the model
    end_a = straight / "checkpoints" / f"ckpt-{STEPS:012d}"
    end_b = run_dir / "checkpoints" / f"ckpt-{STEPS:012d}"
    for k, v in _part(end_a, "dense").items():
        np.testing.assert_array_equal(v, _part(end_b, "dense")[k], err_msg=k)
    metrics_a, metrics_b = _part(end_a, "metrics"), _part(end_b, "metrics")
    for k, v in metrics_a.items():
        np.testing.assert_allclose(v, metrics_b[k], rtol=1e-12, err_msg=k)  # sums' order
    assert _table_crcs(end_a) == _table_crcs(end_b)


def _table_crcs(ckpt: Path) -> list[dict[str, int]]:
    return [{f: v["crc32"] for f, v in s["files"].items() if f.endswith(".ktab")}
            for s in Manifest.read(ckpt).ps["shards"]]
