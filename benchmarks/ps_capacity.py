#!/usr/bin/env python
"""Capacity: a table of tens of millions of live rows spread over shard processes.

Starts ``--shards`` ``kraken ps`` processes holding one dim-16 row-wise-AdaGrad table,
admits ``--rows`` new keys through training pulls in batches of ``--batch`` (the way a
stream admits them), then reports:

- admission rate (rows/s, all shards together, client included);
- per shard: live rows, the table's own bytes per live row (index + arena), the shard
  process's RSS per live row, against the ideal of key + weights + state + 8 B metadata;
- a checkpoint of every shard (time, bytes, MB/s) and its restore onto ``--restore-onto``
  fresh shards (resharding: every row re-routed).

All processes share this machine's cores and disk.

    python benchmarks/ps_capacity.py --rows 40000000 --shards 4 --restore-onto 3
    python benchmarks/ps_capacity.py --quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from kraken.ps import Router, ShardedPS
from kraken.ps.client import RemoteShard
from kraken.ps.processes import ShardProcesses


def _connect(procs: ShardProcesses) -> ShardedPS:
    return ShardedPS([RemoteShard(a, index=i, save_timeout=3600.0)
                      for i, a in enumerate(procs.addresses)], Router.uniform(procs.n))


def _config(path: Path, rows: int, dim: int) -> Path:
    path.write_text(json.dumps({
        "model": {"name": "dlrm"}, "ps": {"evict_every": 0},
        "tables": {"emb": {"dim": dim, "capacity": int(rows * 1.05),
                           "optimizer": {"type": "rowwise_adagrad", "lr": 0.05}}}}))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=40_000_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--restore-onto", type=int, default=3)
    p.add_argument("--batch", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--dir", default=None, help="checkpoint directory (default: a temp dir)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.rows, args.batch = 200_000, 50_000
    work = Path(args.dir or tempfile.mkdtemp(prefix="kraken-capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = _config(work / "run.json", args.rows, args.dim)
    ideal = 8 + 4 * args.dim + 4 + 8  # key + weights + 1 float of state + 8 B metadata
    rng = np.random.default_rng(0)
    ckpt = work / "ckpt"
    try:
        with ShardProcesses(cfg, args.shards) as procs, _connect(procs) as ps:
            ps.pull({"emb": np.arange(1000, dtype=np.int64)}, train=True, now=1)  # compile
            base_rss = [psutil.Process(pid).memory_info().rss for pid in procs.pids]
            t0 = time.perf_counter()
            done = 0
            while done < args.rows:
                n = min(args.batch, args.rows - done)
                keys = rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64)
                ps.pull({"emb": keys}, train=True, now=1)
                done += n
            admit_s = time.perf_counter() - t0
            stats = ps.shard_stats()
            live = sum(s["emb"].live_rows for s in stats)
            print(f"admitted {live:,} rows in {admit_s:.1f} s: {live / admit_s / 1e6:.2f}M "
                  f"rows/s over {args.shards} shards (ideal {ideal} B per row)")
            for i, (s, pid, rss0) in enumerate(zip(stats, procs.pids, base_rss)):
                e = s["emb"]
                rss = psutil.Process(pid).memory_info().rss
                print(f"  shard {i}: {e.live_rows:,} live rows, table "
                      f"{e.memory_bytes / e.live_rows:.1f} B/row "
                      f"({e.memory_bytes / e.live_rows / ideal:.2f}x ideal), process RSS "
                      f"growth {(rss - rss0) / e.live_rows:.1f} B/row "
                      f"({(rss - rss0) / e.live_rows / ideal:.2f}x)")
            t0 = time.perf_counter()
            layout = ps.save(ckpt)
            save_s = time.perf_counter() - t0
            nbytes = sum(f["bytes"] for s in layout["shards"] for f in s["files"].values())
            print(f"checkpoint: {nbytes / 2**30:.2f} GiB in {save_s:.1f} s "
                  f"({nbytes / save_s / 1e6:.0f} MB/s)")
        with ShardProcesses(cfg, args.restore_onto) as procs, _connect(procs) as ps:
            t0 = time.perf_counter()
            ps.load(ckpt, layout, checkpoint="capacity")
            load_s = time.perf_counter() - t0
            live2 = sum(s["emb"].live_rows for s in ps.shard_stats())
            print(f"restore onto {args.restore_onto} shards: {live2:,} rows in {load_s:.1f} s "
                  f"({nbytes / load_s / 1e6:.0f} MB/s of checkpoint)")
            assert live2 == live, (live2, live)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
