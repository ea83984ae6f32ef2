#!/usr/bin/env python
"""Many training workers (torchrun, DDP over gloo) on shared PS shards: throughput,
quality and recovery, against one worker on the same machine.

On one machine the workers and the shards compete for the same cores, so this measures
what more workers cost, not a speed-up: the goal is that total throughput never falls
below 0.9x of one worker, and that quality (progressive AUC) stays within 0.002.

Modes:

  throughput  W = 1, 2, 4 workers (``--workers``) with ``--shards`` shard processes on
              train_throughput.py's DLRM stream (13 dense + 26 Zipf(1.05) fields, dim 16,
              batch 4096, row-wise AdaGrad, count-min admission, LRU eviction): total
              samples/s (all workers, steady state) and its ratio to W = 1 (every worker
              trains ``--batch`` records a step, so a step holds W x batch), bytes sent per
              sample (PS requests; the gradient all-reduce as a ring sends it), and per
              worker the seconds spent
              in the gradient all-reduce (bucket latency, summed), pulls, pushes and the
              per-step control all-reduce. Every W runs under torchrun, W = 1 included
              (a world of one: its collectives are local no-ops).
  quality     cumulative progressive AUC of W = 1, 2, 4 workers (``kraken launch
              --workers W``) on the synthetic drifting stream and, when the data exists
              (``--data``), MovieLens-1M with DeepFM; the run's ``batch_size`` is the
              step's batch over all workers (each takes batch_size / W).
  allreduce   the gloo all-reduce alone between W processes on this machine, for sizes
              from 4 KB to 16 MB: seconds per call, hence a latency and a per-byte cost
              (the inputs of docs/scaling.md's projection for many workers).
  recovery    SIGKILL one worker (torchrun restarts the group) or one shard (``kraken
              launch`` restarts shards and workers) after the first checkpoint: seconds
              from the kill to the first block trained again, and samples trained twice.

Figures are medians over ``--reps`` repetitions with [min-max]; the variants alternate
within a repetition.

    python benchmarks/workers.py throughput --reps 3
    python benchmarks/workers.py quality --reps 1
    python benchmarks/workers.py recovery --reps 3
    python benchmarks/workers.py allreduce --workers 2,4 --steps 20
    python benchmarks/workers.py throughput --quick      # a tiny smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def torchrun(workers: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(workers), "--monitor-interval", "0.2", *args]


def summary(xs: list[float], fmt: str = ",.0f") -> str:
    return (f"{format(statistics.median(xs), fmt)} "
            f"[{format(min(xs), fmt)}-{format(max(xs), fmt)}]")


# -- throughput ----------------------------------------------------------------------------

def dlrm_tables(capacity: int) -> dict[str, Any]:
    from kraken.optim import RowWiseAdaGrad
    from kraken.table import LRU, CountMin, TableConfig

    return {"emb": TableConfig(dim=16, capacity=capacity, optimizer=RowWiseAdaGrad(lr=0.05),
                               admission=CountMin(threshold=2), eviction=LRU(0.95, 0.85))}


def child_throughput(args: argparse.Namespace) -> None:
    """One worker of a throughput run (under torchrun): trains its blocks, writes JSON."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size=int(os.environ["WORLD_SIZE"]), is_master=False,
                          timeout=datetime.timedelta(seconds=300))
    dist.init_process_group("gloo", store=dist.PrefixStore("bench", store),
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    from train_throughput import _ListStream, build_dense_model, make_batches

    from kraken.nn import EmbeddingLayer
    from kraken.ps import Router, ShardedPS
    from kraken.ps.client import RemoteShard
    from kraken.train import TrainerConfig
    from kraken.train.distributed import DistributedTrainer
    from kraken.train.group import WorkerGroup

    group = WorkerGroup()
    # every worker generates the same stream and keeps its own blocks (not timed)
    batches = make_batches(args.steps * group.world, args.batch, args.vocab, seed=1)
    sent = [0]
    shards = []
    for i, a in enumerate(args.addresses.split(",")):
        shard = RemoteShard(a, index=i)
        call = shard._call

        def counted(method: str, payload: bytes, timeout: float | None = None,
                    _call: Any = call) -> Any:
            sent[0] += len(payload)
            return _call(method, payload, timeout)

        shard._call = counted  # type: ignore[method-assign]
        shards.append(shard)
    ps = ShardedPS(shards, Router.uniform(len(shards)), push_staleness=args.staleness)
    stream = _ListStream(batches)
    stamps: list[float] = []
    # ``batch_size`` is a step's batch over all workers: each worker trains --batch a step
    cfg = TrainerConfig(batch_size=args.batch * group.world, dense_lr=1e-3, log_every_s=1e9,
                        window=10**12)
    tr = DistributedTrainer(group=group, model=build_dense_model(),
                            embedding=EmbeddingLayer(ps, stream.schema), ps=ps, stream=stream,
                            config=cfg, on_block=lambda s, e: stamps.append(time.perf_counter()))
    s = tr.run()
    ps.close()
    steady = stamps[args.warmup:]
    steps = len(steady) - 1
    rate = steps * args.batch * group.world / (steady[-1] - steady[0])
    out = {"rank": group.rank, "world": group.world, "samples_per_s": rate,
           "samples": s.samples, "ps_bytes": sent[0], "mine": len(stamps) * args.batch,
           **tr.times.as_dict(), "group_s": group.seconds}
    Path(args.out, f"rank{group.rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def throughput(args: argparse.Namespace) -> None:
    from kraken.ps.processes import ShardProcesses

    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "run.json"
    cfg.write_text(json.dumps({"model": {"name": "dlrm"}, "ps": {"evict_every": 5},
                               "tables": {n: c.to_dict() for n, c in
                                          dlrm_tables(args.capacity).items()}}))
    results: dict[int, list[list[dict[str, Any]]]] = {w: [] for w in args.workers}
    for rep in range(args.reps):
        order = args.workers[rep % len(args.workers):] + args.workers[:rep % len(args.workers)]
        for w in order:
            out = tmp / f"out-{rep}-{w}"
            out.mkdir()
            with ShardProcesses(cfg, args.shards) as procs:  # fresh shards every run
                cmd = torchrun(w, __file__, "--child", "throughput",
                               "--addresses", ",".join(procs.addresses),
                               "--steps", str(args.steps), "--warmup", str(args.warmup),
                               "--batch", str(args.batch), "--vocab", str(args.vocab),
                               "--staleness", str(args.staleness), "--out", str(out))
                done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"{w} workers failed:\n{done.stderr[-4000:]}")
            ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(w)]
            results[w].append(ranks)
            print(f"rep {rep} W={w}: {ranks[0]['samples_per_s']:,.0f} samples/s", flush=True)
    print(f"\n$ {' '.join(sys.argv)}")
    print(f"DLRM, batch {args.batch} per worker, 26 fields x {args.vocab:,} IDs Zipf(1.05), "
          f"dim 16, {args.shards} shards, push_staleness {args.staleness}, {args.steps} steps "
          f"per worker ({args.warmup} warm-up), {args.reps} reps; median [min-max]")
    head = (f"{'W':>2} {'samples/s':>24} {'x W=1':>18} {'PS B/smp':>9} {'AR B/smp':>9} "
            f"{'allreduce s':>12} "
            f"{'pull s':>8} {'push s':>8} {'control s':>10} {'AR MB/step':>10}")
    print(head)
    base = [r[0]["samples_per_s"] for r in results[args.workers[0]]]
    for w in args.workers:
        reps = results[w]
        rates = [r[0]["samples_per_s"] for r in reps]
        ratio = [a / b for a, b in zip(rates, base, strict=True)]
        ps_bytes = [sum(x["ps_bytes"] for x in r) / r[0]["samples"] for r in reps]
        # a ring all-reduce sends 2 (W-1)/W of the reduced bytes from every worker
        ar_bytes = [sum(x["allreduce_bytes"] for x in r) * 2 * (w - 1) / w / r[0]["samples"]
                    for r in reps]
        ar = [statistics.median(x["allreduce_s"] for x in r) for r in reps]
        pull = [statistics.median(x["pull_s"] for x in r) for r in reps]
        push = [statistics.median(x["push_s"] for x in r) for r in reps]
        ctl = [statistics.median(x["control_s"] for x in r) for r in reps]
        mb = reps[0][0]["allreduce_bytes"] / max(reps[0][0]["steps"], 1) / 2**20
        print(f"{w:>2} {summary(rates):>24} {summary(ratio, '.2f'):>18} "
              f"{statistics.median(ps_bytes):>9,.0f} {statistics.median(ar_bytes):>9,.0f} "
              f"{statistics.median(ar):>12.2f} "
              f"{statistics.median(pull):>8.2f} {statistics.median(push):>8.2f} "
              f"{statistics.median(ctl):>10.2f} {mb:>10.3f}")
    print("bytes sent per sample: PS requests (all workers), all-reduce as a ring sends it "
          "(2 (W-1)/W x the dense bytes per worker per step); per-worker seconds: medians "
          "over workers of the whole run (warm-up included)")
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in results.items()}))
    shutil.rmtree(tmp, ignore_errors=True)


# -- allreduce ---------------------------------------------------------------------------

CASES = "synthetic,ml-1m"
SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20)


def child_allreduce(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size=int(os.environ["WORLD_SIZE"]), is_master=False)
    dist.init_process_group("gloo", store=dist.PrefixStore("bench", store),
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    out = {}
    for size in SIZES:
        t = torch.ones(size // 4)
        for _ in range(3):
            dist.all_reduce(t)
        times = []
        for _ in range(args.steps):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        out[size] = statistics.median(times)
    if dist.get_rank() == 0:
        Path(args.out, "allreduce.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def allreduce(args: argparse.Namespace) -> None:
    rows: dict[int, dict[int, list[float]]] = {}
    for w in [w for w in args.workers if w > 1]:
        rows[w] = {size: [] for size in SIZES}
        for _ in range(args.reps):
            tmp = Path(tempfile.mkdtemp())
            cmd = torchrun(w, __file__, "--child", "allreduce", "--steps", str(args.steps),
                           "--out", str(tmp))
            done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"allreduce W={w} failed:\n{done.stderr[-4000:]}")
            for size, sec in json.loads((tmp / "allreduce.json").read_text()).items():
                rows[w][int(size)].append(sec)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n$ {' '.join(sys.argv)}")
    print(f"gloo all_reduce (sum, float32) between W processes on this machine; median of "
          f"{args.steps} calls per run, median [min-max] of {args.reps} runs, milliseconds")
    print(f"{'W':>2} " + " ".join(f"{f'{s >> 10} KB':>20}" for s in SIZES)
          + f" {'latency ms':>11} {'ns/byte':>8}")
    for w, by in rows.items():
        med = {s: statistics.median(v) for s, v in by.items()}
        per_byte = (med[SIZES[-1]] - med[SIZES[-2]]) / (SIZES[-1] - SIZES[-2])
        latency = med[SIZES[0]] - per_byte * SIZES[0]
        print(f"{w:>2} " + " ".join(f"{summary([x * 1e3 for x in by[s]], '.2f'):>20}"
                                    for s in SIZES)
              + f" {latency * 1e3:>11.3f} {per_byte * 1e9:>8.2f}")


# -- quality -------------------------------------------------------------------------------

def run_config(name: str, data: Path, n: int) -> dict[str, Any] | None:
    """The run of a quality case (None when its data is missing)."""
    if name == "synthetic":
        return {"data": {"source": "synthetic", "n_records": n, "n_fields": 8,
                         "vocab": 100_000, "drift_ids_per_1k": 2},
                "model": {"name": "deepfm", "hidden": [64, 32]},
                "tables": {"emb": {"dim": 8, "capacity": 400_000,
                                   "optimizer": {"type": "rowwise_adagrad", "lr": 0.05}}},
                "trainer": {"batch_size": 1024, "log_every_s": 3600, "window": 10**9},
                "ps": {"evict_every": 10}}
    root = data / "movielens" / "ml-1m"
    if not root.is_dir():
        return None
    from kraken.train.config import load_config

    doc = load_config(ROOT / "examples" / "movielens-1m.toml").to_dict()
    doc["data"]["root"] = str(root)
    doc["trainer"].update({"log_every_s": 3600, "window": 10**9})
    return doc


def quality(args: argparse.Namespace) -> None:
    cases = [c for c in args.cases.split(",")]
    rows = []
    for name in cases:
        doc = run_config(name, args.data, args.records)
        if doc is None:
            print(f"{name}: no data under {args.data}; skipped")
            continue
        aucs: dict[int, list[float]] = {w: [] for w in args.workers}
        for rep in range(args.reps):
            for w in args.workers:
                tmp = Path(tempfile.mkdtemp())
                cfg = tmp / "run.json"
                cfg.write_text(json.dumps(doc))
                cmd = [*KRAKEN, "launch", "--config", str(cfg), "--shards", str(args.shards),
                       "--workers", str(w), "--run-dir", str(tmp / "run")]
                done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
                if done.returncode != 0:
                    sys.exit(f"{name} W={w} failed:\n{done.stderr[-4000:]}")
                final = json.loads((tmp / "run" / "metrics.jsonl").read_text()
                                   .splitlines()[-1])
                aucs[w].append(final["cumulative"]["auc"])
                print(f"rep {rep} {name} W={w}: AUC {aucs[w][-1]:.4f} over "
                      f"{final['samples']:,} samples", flush=True)
                shutil.rmtree(tmp, ignore_errors=True)
        for w in args.workers:
            diff = [a - b for a, b in zip(aucs[w], aucs[args.workers[0]], strict=True)]
            rows.append((name, w, summary(aucs[w], ".4f"), summary(diff, "+.4f")))
    print(f"\n$ {' '.join(sys.argv)}")
    print(f"{args.shards} shards; cumulative progressive AUC over every worker's predictions; "
          f"median [min-max] of {args.reps} reps")
    print(f"{'stream':>10} {'W':>2} {'AUC':>26} {'- AUC(W=1)':>28}")
    for name, w, auc, diff in rows:
        print(f"{name:>10} {w:>2} {auc:>26} {diff:>28}")


# -- recovery ------------------------------------------------------------------------------

def recovery_config(n: int) -> dict[str, Any]:
    doc = run_config("synthetic", Path("."), n)
    assert doc is not None
    doc["trainer"].update({"checkpoint_every_samples": n // 5, "batch_size": 1024})
    return doc


def _blocks(trace: Path) -> list[tuple[float, int, int, int]]:
    """``(unix time, start, end, pid)`` of every block trained, in trace order."""
    out = []
    for line in trace.read_text().splitlines() if trace.is_file() else []:
        _, _, start, end, t, pid = line.split()
        out.append((float(t), int(start), int(end), int(pid)))
    return out


def _shard_pids(run_dir: Path) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if " ps " in " ".join(p.info["cmdline"] or []) and str(run_dir) in
            " ".join(p.info["cmdline"] or [])]


def _worker_pids(root: int) -> list[int]:
    import psutil

    out = []
    for c in psutil.Process(root).children(recursive=True):
        try:
            if "kraken.train" in " ".join(c.cmdline()) and c.environ().get("RANK") == "1":
                out.append(c.pid)
        except psutil.Error:
            continue
    return out


def recovery(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, int]]] = {"worker": [], "shard": []}
    for rep in range(args.reps):
        for what in ("worker", "shard"):
            tmp = Path(tempfile.mkdtemp())
            cfg, run_dir, trace = tmp / "run.json", tmp / "run", tmp / "blocks.txt"
            cfg.write_text(json.dumps(recovery_config(args.records)))
            cmd = [*KRAKEN, "launch", "--config", str(cfg), "--shards", str(args.shards),
                   "--workers", str(args.workers[-1]), "--run-dir", str(run_dir),
                   "--max-restarts", "2", "--trace-blocks", str(trace)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, env=ENV, cwd=ROOT, start_new_session=True)
            killed: list[float] = []

            def kill(what: str = what, proc: subprocess.Popen[str] = proc,
                     run_dir: Path = run_dir, killed: list[float] = killed) -> None:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline and proc.poll() is None:
                    if (run_dir / "checkpoints" / "LATEST").is_file():
                        pids = _shard_pids(run_dir) if what == "shard" else \
                            _worker_pids(proc.pid)
                        if pids:
                            killed.append(time.time())
                            os.kill(pids[-1], signal.SIGKILL)
                            return
                    time.sleep(0.02)

            killer = threading.Thread(target=kill)
            killer.start()
            _, err = proc.communicate()
            killer.join()
            if proc.returncode != 0 or not killed:
                sys.exit(f"recovery ({what}) failed:\n{err[-4000:]}")
            blocks = _blocks(trace)
            old = {pid for t, _, _, pid in blocks if t <= killed[0]}
            seen: dict[tuple[int, int], int] = {}
            for _, s, e, _ in blocks:
                seen[(s, e)] = seen.get((s, e), 0) + 1
            twice = sum(e - s for (s, e), k in seen.items() if k > 1)
            # training again: the first block trained by a process started after the kill
            restart = min(t for t, _, _, pid in blocks if pid not in old) - killed[0]
            results[what].append((restart, twice))
            print(f"rep {rep} {what} killed: training again after {restart:.1f} s, "
                  f"{twice:,} samples trained twice", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n$ {' '.join(sys.argv)}")
    print(f"{args.workers[-1]} workers, {args.shards} shards, synthetic stream of "
          f"{args.records:,}, checkpoint every {args.records // 5:,} samples; "
          f"median [min-max] of {args.reps} reps")
    for what, xs in results.items():
        print(f"SIGKILL a {what:<6}: training again after "
              f"{summary([x[0] for x in xs], '.1f')} s, samples trained twice "
              f"{summary([float(x[1]) for x in xs])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=("throughput", "quality", "allreduce", "recovery"),
                   default="throughput")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="batches per worker")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=1_000_000)
    p.add_argument("--capacity", type=int, default=1_500_000)
    p.add_argument("--staleness", type=int, default=0)
    p.add_argument("--records", type=int, default=1_000_000,
                   help="records of the synthetic stream (quality, recovery)")
    p.add_argument("--cases", default=CASES)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--addresses", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "throughput":
        child_throughput(args)
        return
    if args.child == "allreduce":
        child_allreduce(args)
        return
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.reps, args.steps, args.warmup, args.batch, args.vocab, args.capacity = (
            1, 6, 2, 256, 5000, 20_000)
        args.records, args.workers = 30_000, [1, 2]
        if args.cases == CASES:
            args.cases = "synthetic"
    {"throughput": throughput, "quality": quality, "allreduce": allreduce,
     "recovery": recovery}[args.mode](args)


if __name__ == "__main__":
    main()
