#!/usr/bin/env python
"""Checkpoint speed against the disk: full save, restore and incremental saves.

One table of ``--rows`` rows (dim 16, row-wise AdaGrad, float32; filled with
``load_rows`` in batches of 1M, not by training), and in every repetition, in a
rotating order:

disk      the disk's own bandwidth for a file of the table file's size: ``os.write`` of
          a preallocated 32 MiB buffer until the size is reached, then ``fsync``
          (write); ``posix_fadvise(DONTNEED)`` to drop it from the page cache, then
          ``readinto`` the whole file (read, context only).
save      ``table.save(path)`` to a new path: a full table file (streamed, checksummed,
          fsynced, renamed). Target: >= 0.8x the disk's write bandwidth of the same repetition.
restore   ``SparseTable.from_file(path)`` after dropping the file from the page cache:
          read, verify every checksum, rebuild the index. Target: >= 0.8x the disk's
          write bandwidth (as asked) and shown against its read bandwidth too.
inc 1% / inc 10%
          ``apply_gradients`` on that share of the rows (uniform), then
          ``table.save(path, since=v)`` with ``v`` the version of the last full save:
          seconds, bytes and the size against the full file.

Results: median over repetitions with min and max; ratios are paired per repetition.

    python benchmarks/checkpoint.py                       # 5M rows, 3 repetitions
    python benchmarks/checkpoint.py --rows 20000000 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import kraken
from kraken.table import TableConfig, TableRows

DIM = 16
_BUF = 32 << 20


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_write(path: Path, size: int) -> float:
    """Seconds to write ``size`` bytes with ``os.write`` of one buffer, then fsync."""
    buf = np.random.default_rng(0).integers(0, 255, _BUF, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, buf[:min(left, _BUF)])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def disk_read(path: Path) -> float:
    _drop_cache(path)
    buf = bytearray(_BUF)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def build(rows: int) -> kraken.SparseTable:
    t = kraken.SparseTable(TableConfig(dim=DIM, capacity=rows, optimizer=kraken.RowWiseAdaGrad()))
    rng = np.random.default_rng(1)
    for s in range(0, rows, 1 << 20):
        n = min(rows, s + (1 << 20)) - s
        keys = (np.arange(s, s + n, dtype=np.int64) * 2654435761) ^ (7 << 56)
        t.load_rows(TableRows(keys=keys, weights=rng.standard_normal((n, DIM), np.float32),
                              state=rng.random((n, 1), np.float32),
                              last_seen=np.full(n, 1, np.int32), count=np.ones(n, np.float32),
                              stamp=np.ones(n, np.int32)))
    return t


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run(rows: int, reps: int, folder: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    table = build(rows)
    fill_s = time.perf_counter() - t0
    full = folder / "full.ktab"
    table.save(full)
    size = full.stat().st_size
    base = table.stats().version
    keys = table.export().keys
    rng = np.random.default_rng(2)
    out: dict[str, list[float]] = {k: [] for k in (
        "disk_write_MBps", "disk_read_MBps", "save_s", "save_MBps", "restore_s",
        "restore_MBps", "save_vs_disk", "restore_vs_disk_write", "restore_vs_disk_read",
        "inc1_s", "inc1_bytes", "inc1_vs_full", "inc10_s", "inc10_bytes", "inc10_vs_full")}
    steps = ["disk", "save", "restore", "inc"]
    for rep in range(reps):
        got: dict[str, float] = {}
        for step in steps[rep % 4:] + steps[:rep % 4]:
            gc.collect()
            if step == "disk":
                probe = folder / "disk.bin"
                got["w"] = disk_write(probe, size)
                got["r"] = disk_read(probe)
                probe.unlink()
            elif step == "save":  # to a new file, as a checkpoint does
                fresh = folder / f"full-{rep}.ktab"
                t0 = time.perf_counter()
                table.save(fresh)
                got["save"] = time.perf_counter() - t0
                base = table.stats().version
                full.unlink()
                full = fresh
            elif step == "restore":
                _drop_cache(full)
                t0 = time.perf_counter()
                back = kraken.SparseTable.from_file(full)
                got["restore"] = time.perf_counter() - t0
                if len(back) != rows:
                    raise SystemExit(f"restored {len(back)} rows, expected {rows}")
                del back
            else:
                for share, name in ((0.01, "inc1"), (0.10, "inc10")):
                    k = rng.choice(keys, int(rows * share), replace=False)
                    table.apply_gradients(k, np.full((k.size, DIM), 0.01, np.float32), now=2)
                    path = folder / f"{name}.ktab"
                    t0 = time.perf_counter()
                    table.save(path, since=base)
                    got[name] = time.perf_counter() - t0
                    got[name + "_bytes"] = path.stat().st_size
                    path.unlink()
                # the next increments start from a new full save
                table.save(full)
                base = table.stats().version
        mb = size / 1e6
        out["disk_write_MBps"].append(mb / got["w"])
        out["disk_read_MBps"].append(mb / got["r"])
        out["save_s"].append(got["save"])
        out["save_MBps"].append(mb / got["save"])
        out["restore_s"].append(got["restore"])
        out["restore_MBps"].append(mb / got["restore"])
        out["save_vs_disk"].append(got["w"] / got["save"])
        out["restore_vs_disk_write"].append(got["w"] / got["restore"])
        out["restore_vs_disk_read"].append(got["r"] / got["restore"])
        for name in ("inc1", "inc10"):
            out[f"{name}_s"].append(got[name])
            out[f"{name}_bytes"].append(got[name + "_bytes"])
            out[f"{name}_vs_full"].append(got[name + "_bytes"] / size)
    return {"rows": rows, "dim": DIM, "file_bytes": size, "fill_s": fill_s, "reps": reps,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "results": {k: _summary(v) for k, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="folder on the disk to measure")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        res = run(args.rows, args.reps, Path(d))
    res["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    res["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    res["machine"] = f"{platform.machine()} {os.cpu_count()} cpus"
    print(f"{res['rows']:,} rows, file {res['file_bytes'] / 1e6:.0f} MB, "
          f"fill {res['fill_s']:.1f} s, peak RSS {res['peak_rss_MB']:.0f} MB")
    for k, v in res["results"].items():
        print(f"  {k:24s} {v['median']:12.3f}   [{v['min']:.3f} .. {v['max']:.3f}]")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
