#!/usr/bin/env python
"""Pull and push cost per unique key: in process against 1, 2 and 4 shard processes.

For each dim and batch size, a table is prefilled with ``--rows`` keys, then training
pulls (``train=True``: access counted, rows returned) and pushes (row-wise AdaGrad step,
``push_staleness = 0``) of ``U`` distinct present keys are timed. Every configuration is
measured in the same run, alternating, ``--reps`` times; the table gives the median
microseconds per key with min and max, and the payload rate (keys 8 B + rows 4 D B per
key) in MB/s. Shard processes run on this machine and compete with the client for its
cores, so the remote figures include that contention; ratios are to the in-process PS.

    python benchmarks/ps_ops.py                      # dims 16, 64; U = 20k, 100k
    python benchmarks/ps_ops.py --quick              # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from kraken.optim import RowWiseAdaGrad
from kraken.ps import LocalPS, Router, ShardedPS
from kraken.ps.client import RemoteShard
from kraken.ps.processes import ShardProcesses
from kraken.table import TableConfig


def _tables(dim: int, rows: int) -> dict[str, TableConfig]:
    return {"emb": TableConfig(dim=dim, capacity=rows + rows // 4,
                               optimizer=RowWiseAdaGrad(lr=0.05))}


def _prefill(ps: ShardedPS, keys: np.ndarray, chunk: int = 200_000) -> None:
    for i in range(0, keys.shape[0], chunk):
        ps.pull({"emb": keys[i:i + chunk]}, train=True, now=1)


def _time(ps: ShardedPS, batches: list[np.ndarray], dim: int) -> tuple[float, float]:
    """Seconds per key of pull(train=True) and push over ``batches``."""
    pull_s = push_s = 0.0
    n = 0
    for j, k in enumerate(batches):
        g = np.full((k.shape[0], dim), 1e-3, np.float32)
        t0 = time.perf_counter()
        ps.pull({"emb": k}, train=True, now=2 + j)
        t1 = time.perf_counter()
        ps.push({"emb": (k, g)}, now=2 + j)
        t2 = time.perf_counter()
        pull_s += t1 - t0
        push_s += t2 - t1
        n += k.shape[0]
    return pull_s / n, push_s / n


def _open(kind: str, dim: int, rows: int) -> tuple[ShardedPS, ShardProcesses | None]:
    tables = _tables(dim, rows)
    if kind == "in-process":
        return LocalPS(tables, evict_every=0), None
    n = int(kind.split()[0])
    cfg = os.path.join(tempfile.mkdtemp(), "run.json")
    with open(cfg, "w") as f:
        json.dump({"model": {"name": "dlrm"}, "ps": {"evict_every": 0},
                   "tables": {k: c.to_dict() for k, c in tables.items()}}, f)
    procs = ShardProcesses(cfg, n)
    ps = ShardedPS([RemoteShard(a, index=i) for i, a in enumerate(procs.addresses)],
                   Router.uniform(n))
    return ps, procs


def spread(data: str) -> None:
    """How evenly real feature keys (field in the top 8 bits) fall on 2-16 shards."""
    from kraken.data import open_stream

    sources = {"criteo (kaggle head 8k)": ("criteo",
                                           {"path": f"{data}/criteo/kaggle_head_8k/train.txt"}),
               "movielens-1m": ("movielens-1m", {"root": f"{data}/movielens/ml-1m"}),
               "avazu (first hour 9k)": ("avazu",
                                         {"path": f"{data}/avazu/first_hour_9k/train.csv"})}
    print("\nspread of distinct real keys over shards (4096 buckets): largest shard / mean")
    for name, (source, kw) in sources.items():
        try:
            stream = open_stream(source, **kw)
        except Exception as exc:  # noqa: BLE001 - a missing sample is reported, not fatal
            print(f"  {name}: skipped ({exc})")
            continue
        keys = np.unique(np.concatenate(
            [np.concatenate([b.keys.reshape(-1)] + [j.values for j in b.jagged.values()])
             for b in stream.batches(65536)]))
        row = [f"  {name:<24} {keys.shape[0]:>9,} keys"]
        for n in (2, 4, 8, 16):
            counts = np.bincount(Router.uniform(n).shard_of(keys), minlength=n)
            row.append(f"{n} shards {counts.max() / counts.mean():.3f}")
        print("  ".join(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="16,64")
    p.add_argument("--unique", default="20000,100000", help="distinct keys per batch")
    p.add_argument("--rows", type=int, default=1_000_000, help="keys prefilled")
    p.add_argument("--batches", type=int, default=5, help="timed batches per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--configs", default="in-process,1 shard,2 shards,4 shards")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--spread", default=None, metavar="DATA_DIR",
                   help="only measure how real keys spread over shards (../shared/data)")
    args = p.parse_args()
    if args.spread:
        spread(args.spread)
        return
    if args.quick:
        args.dims, args.unique, args.rows, args.batches, args.reps = "8", "2000", 20_000, 2, 1
        args.configs = "in-process,2 shards"
    dims = [int(x) for x in args.dims.split(",")]
    sizes = [int(x) for x in args.unique.split(",")]
    configs = args.configs.split(",")
    rng = np.random.default_rng(0)
    universe = rng.choice(np.int64(1) << 62, size=args.rows, replace=False).astype(np.int64)
    results: dict[str, Any] = {}
    for dim in dims:
        opened = {c: _open(c, dim, args.rows) for c in configs}
        try:
            for ps, _ in opened.values():
                _prefill(ps, universe)
                _time(ps, [universe[:1000]], dim)  # warm-up: compile, connect
            for u in sizes:
                per: dict[str, dict[str, list[float]]] = {c: {"pull": [], "push": []}
                                                          for c in configs}
                for rep in range(args.reps):
                    batches = [rng.choice(universe, size=u, replace=False)
                               for _ in range(args.batches)]
                    order = configs[rep % len(configs):] + configs[:rep % len(configs)]
                    for c in order:
                        pull, push = _time(opened[c][0], batches, dim)
                        per[c]["pull"].append(pull * 1e6)
                        per[c]["push"].append(push * 1e6)
                results[f"dim{dim}/U{u}"] = per
                _report(dim, u, per, configs)
        finally:
            for ps, procs in opened.values():
                ps.close()
                if procs is not None:
                    procs.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _report(dim: int, u: int, per: dict[str, dict[str, list[float]]], configs: list[str]
            ) -> None:
    mb = (8 + 4 * dim) / 1e6  # payload MB per key
    print(f"\ndim {dim}, {u:,} unique keys per batch: us per key, median [min-max]; MB/s; "
          f"ratio to in-process (median of paired reps)")
    base = per[configs[0]]
    for c in configs:
        row = [f"{c:>11}"]
        for verb in ("pull", "push"):
            xs = per[c][verb]
            med = statistics.median(xs)
            ratio = statistics.median(a / b for a, b in zip(xs, base[verb]))
            row.append(f"{verb} {med:6.3f} [{min(xs):.3f}-{max(xs):.3f}] "
                       f"{mb / (med * 1e-6):7.1f} MB/s x{ratio:5.2f}")
        print("  ".join(row), flush=True)


if __name__ == "__main__":
    main()
