"""Crash drill: ``kraken train`` reading the log is killed (-9) at random points while a
writer appends; each time it resumes. The stream's audit files (which samples each
process yielded, which positions it handed to checkpoints, which one it resumed from)
show that every impression went into the final model exactly once, that a killed
process re-did only what followed its last checkpoint (so nothing was trained more than
twice), and that nothing was lost. The last process stops on SIGTERM, cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
KILLS = 5
CLICKED = 4  # every 4th request is clicked, 1 s of event time after its impression

CONFIG = """
[log]
url = "{url}"
window_s = 3
block_ms = 50
read_count = 256
consumer = "drill"
backoff_s = 0.05
audit = "{audit}"
[log.schema]
categorical = ["user", "item"]
dense = ["price"]

[model]
name = "lr"

[tables.emb]
dim = 4
capacity = 5000

[trainer]
batch_size = 256
checkpoint_every_s = 0.25
log_every_s = 0.5
"""


class Writer(threading.Thread):
    """Appends impressions (50 per event-time second) and their clicks in event-time
    order, about ``rate`` impressions per wall second, until stopped."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.rate, self.rid = rate, 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            clicks: list[tuple[int, int]] = []
            while not self.halt.is_set():
                pipe = self.client.pipeline(transaction=False)
                for _ in range(25):
                    self.rid += 1
                    rid, ts = self.rid, 1_000_000 + self.rid // 50
                    while clicks and clicks[0][0] <= ts:
                        cts, crid = clicks.pop(0)
                        pipe.xadd("kraken:actions:0", {"rid": crid, "ts": cts, "type": "click"})
                    pipe.xadd("kraken:impressions:0", {"rid": rid, "ts": ts, "user": rid % 97,
                                                       "item": rid % 31, "price": rid % 7})
                    if rid % CLICKED == 0:
                        clicks.append((ts + 1, rid))
                pipe.execute()
                time.sleep(25 / self.rate)
            for cts, crid in clicks:
                self.client.xadd("kraken:actions:0", {"rid": crid, "ts": cts, "type": "click"})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


_ZYGOTE = """
import os, sys
import torch._dynamo  # what torch.optim imports on first use: once here, not per trainer
import kraken.data.redislog
from kraken.cli.main import main
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "run":
        pid = os.fork()
        if pid == 0:
            out = os.open(args[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os._exit(main(args[1:]))
        print(pid, flush=True)
    elif cmd == "wait":
        print(os.waitstatus_to_exitcode(os.waitpid(int(args[0]), 0)[1]), flush=True)
"""


class Trainers:
    """Starts ``kraken train`` processes by forking one that imported Kraken already
    (what makes the drill short; each child is a whole trainer process of its own)."""

    def __init__(self, out: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.out = out
        self.zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.live: set[int] = set()

    def _ask(self, line: str) -> str:
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.write(line + "\n")
        self.zygote.stdin.flush()
        return self.zygote.stdout.readline().strip()

    def start(self, config: Path, run_dir: Path) -> int:
        pid = int(self._ask(f"run {self.out} train --config {config} --run-dir {run_dir} "
                            f"--resume"))
        self.live.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        rc = int(self._ask(f"wait {pid}"))
        self.live.discard(pid)
        return rc

    def close(self) -> None:
        for pid in list(self.live):
            os.kill(pid, signal.SIGKILL)
            self.wait(pid)
        assert self.zygote.stdin is not None
        self.zygote.stdin.close()
        self.zygote.wait(10)


def _alive(pid: int) -> bool:
    """A child of the zygote still running (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _audit(audit: Path, pid: int) -> list[list[str]]:
    files = list(audit.glob(f"{pid}-*.log"))
    return [line.split() for line in files[0].read_text().splitlines()] if files else []


def _redone(audit: Path, pid: int) -> bool:
    """Whether ``p`` has committed a checkpoint holding every sample it re-did for the
    process before it (killed after its own last checkpoint): killed after that, no
    sample is trained more than twice in all."""
    files = _files(audit)
    mine = next((t for t in files if t.startswith(f"{pid}-")), None)
    if mine is None:
        return False
    lines = files[mine]
    commits = [int(ln[2]) for ln in lines if ln[0] == "C" and ln[1] == mine]
    if not commits:
        return False
    held = set(_samples(_before(lines, commits[-1])))
    start = [ln for ln in lines if ln[0] == "S"]
    if not start:
        return True
    before = files[start[0][1]]
    redo = set(_samples(before)) - set(_samples(_before(before, int(start[0][2]))))
    return redo <= held


def _wait_for(cond, what: str, pid: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if not _alive(pid):
            pytest.fail(f"kraken train exited while waiting for {what}:\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _samples(lines: list[list[str]]) -> list[tuple[int, int]]:
    return [tuple(map(int, s.split(":"))) for ln in lines if ln[0] == "Y" for s in ln[1:]]


def _before(lines: list[list[str]], n: int) -> list[list[str]]:
    """Lines of a process up to its position ``n``."""
    cut = next(i for i, ln in enumerate(lines) if ln[0] == "P" and int(ln[2]) == n)
    return lines[:cut]


def _files(audit: Path) -> dict[str, list[list[str]]]:
    return {f.stem: [ln.split() for ln in f.read_text().splitlines()]
            for f in audit.glob("*.log")}


def _chain(files: dict[str, list[list[str]]], last: list[list[str]],
           ) -> tuple[list[tuple[int, int]], int]:
    """Samples of ``last`` (lines of the newest process, as far as they count) and of
    every process before it up to the position its successor resumed from; and how many
    resumes that chain went through."""
    chain: list[tuple[int, int]] = []
    part, resumed = last, 0
    while True:
        chain += _samples(part)
        start = [ln for ln in part if ln[0] == "S"]
        if not start:
            return chain, resumed
        resumed += 1
        part = _before(files[start[0][1]], int(start[0][2]))


def test_kill_9_at_random_points_trains_every_entry_once_into_the_model(redis_server,
                                                                         tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    audit, run_dir, log = tmp_path / "audit", tmp_path / "run", tmp_path / "train.log"
    config = tmp_path / "drill.toml"
    config.write_text(CONFIG.format(url=redis_server.url, audit=audit))
    writer = Writer(redis_server.url, rate=100)
    writer.start()
    procs: list[int] = []
    trainers = Trainers(log)
    try:
        for _ in range(KILLS):
            pid = trainers.start(config, run_dir)
            procs.append(pid)
            _wait_for(lambda pid=pid: _redone(audit, pid), "a checkpoint past the re-done "
                      "samples", pid, log, 60)
            time.sleep(rng.uniform(0.0, 0.6))
            os.kill(pid, signal.SIGKILL)
            assert trainers.wait(pid) == -signal.SIGKILL
        writer.halt.set()
        writer.join(10)
        assert writer.error is None, writer.error
        last = writer.rid
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        client.xadd("kraken:actions:0", {"rid": 0, "ts": 9_000_000, "type": "click"})  # all expire
        pid = trainers.start(config, run_dir)
        procs.append(pid)

        def everything_yielded() -> bool:
            files = _files(audit)
            mine = next((t for t in files if t.startswith(f"{pid}-")), None)
            if mine is None:
                return False
            done = {r for r, _ in _chain(files, files[mine])[0]}
            return done >= set(range(1, last + 1))

        _wait_for(everything_yielded, f"all {last} requests", pid, log, 60)
        os.kill(pid, signal.SIGTERM)
        assert trainers.wait(pid) == 0, log.read_text()[-3000:]
    finally:
        writer.halt.set()
        trainers.close()
    files = _files(audit)
    by_pid = {int(t.split("-")[0]): t for t in files}
    final = [ln for ln in files[by_pid[procs[-1]]] if ln[0] != "C"]
    assert final[-1][0] == "P", "the final process did not checkpoint on SIGTERM"
    chain, resumed = _chain(files, final[:-1])
    assert resumed >= 1, f"seed {seed}: no process resumed from a checkpoint"
    per = Counter(chain)
    twice = {k: v for k, v in per.items() if v > 1}
    assert not twice, f"seed {seed}: trained twice into the model: {sorted(twice)[:10]}"
    labels = {}
    for rid, kind in chain:
        labels[rid] = max(labels.get(rid, 0), int(kind != 0))
    missing = sorted(set(range(1, last + 1)) - set(labels))
    assert not missing, f"seed {seed}: {len(missing)} impressions lost, e.g. {missing[:10]}"
    wrong = [r for r in range(1, last + 1) if labels[r] != int(r % CLICKED == 0)]
    assert not wrong, f"seed {seed}: wrong labels for {wrong[:10]}"
    # beyond the model: every process yielded each sample at most once, so what a killed
    # process re-did (after its last checkpoint) was trained at most twice in all
    for t, lines in files.items():
        dup = [k for k, v in Counter(_samples(lines)).items() if v > 1]
        assert not dup, f"seed {seed}: process {t} yielded {dup[:5]} twice"
    # what a process yielded up to the checkpoint its successor resumed from is never
    # yielded again by a later process
    order = {by_pid[q]: i for i, q in enumerate(procs) if q in by_pid}
    for lines in files.values():
        for ln in (ln for ln in lines if ln[0] == "S"):
            held = set(_samples(_before(files[ln[1]], int(ln[2]))))
            for u, other in files.items():
                if order[u] > order[ln[1]]:
                    again = held & set(_samples(other))
                    assert not again, f"seed {seed}: checkpointed samples re-done by {u}"
    total = Counter(s for lines in files.values() for s in _samples(lines))
    assert max(total.values()) <= 2, f"seed {seed}: {total.most_common(3)}"
