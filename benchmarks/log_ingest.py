#!/usr/bin/env python
"""Ingest rate of the event-log source against the CSV source, on the same records.

``N`` records with ``--categorical`` text columns (values like ``u123``, hashed) and
``--dense`` numeric columns, written once as a CSV file (with a label column) and once
into a local ``redis-server`` (Debian's package; started here on a free port with its
files in a temporary directory, append-only file on, ``--fsync`` policy) as impression
entries (``rid``, ``ts``, the same raw
strings), plus one action far ahead in event time so that every impression is decided
by the joiner. Not timed: writing either copy.

csv    ``TabularStream(path, schema).batches(B)`` until every record is parsed
log    ``RedisLogStream(config).batches(B)`` (a fresh consumer group each repetition)
       until every impression came out as a sample: XREADGROUP round trips, the reply
       parsed by redis-py (pure Python: no hiredis here), entries checked and
       featurized into columns, joined (the join window expiring), cut into batches

Rate = records / seconds of the loop, per repetition; reported: median with min and
max. Goal: the log at least as fast per record as the CSV source.

    python benchmarks/log_ingest.py                       # 200k records, 5 repetitions
    python benchmarks/log_ingest.py --records 20000 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kraken.data import TabularStream  # noqa: E402
from kraken.data.logconfig import LogConfig  # noqa: E402
from kraken.data.redis_server import RedisServer  # noqa: E402
from kraken.data.redislog import RedisLogStream  # noqa: E402


def records(n: int, n_cat: int, n_dense: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Column names and ``object[n, n_cat + n_dense]`` of raw strings."""
    rng = np.random.default_rng(seed)
    cols = [f"c{i}" for i in range(n_cat)] + [f"d{i}" for i in range(n_dense)]
    out = np.empty((n, len(cols)), dtype=object)
    for j in range(n_cat):
        out[:, j] = np.char.add("u", rng.zipf(1.3, n).clip(max=10**6).astype(str))
    for j in range(n_dense):
        out[:, n_cat + j] = np.round(rng.exponential(3.0, n), 3).astype(str)
    return cols, out


def write_csv(path: Path, cols: list[str], raw: np.ndarray, labels: np.ndarray) -> None:
    with path.open("w") as f:
        f.write("label," + ",".join(cols) + "\n")
        for y, row in zip(labels, raw, strict=True):
            f.write(f"{y}," + ",".join(row) + "\n")


def write_log(url: str, cols: list[str], raw: np.ndarray) -> None:
    client = redis.Redis.from_url(url)
    chunk = 5000
    for a in range(0, raw.shape[0], chunk):
        pipe = client.pipeline(transaction=False)
        for i in range(a, min(a + chunk, raw.shape[0])):
            pipe.xadd("kraken:impressions:0",
                      {"rid": i + 1, "ts": 1_000_000 + i // 1000, **dict(zip(cols, raw[i],
                                                                             strict=True))})
        pipe.execute()
    client.xadd("kraken:actions:0", {"rid": 0, "ts": 9_000_000, "type": "click"})


def time_csv(path: Path, schema: dict, n: int, batch: int) -> float:
    t = time.perf_counter()
    got = sum(len(b) for b in TabularStream(path, schema).batches(batch))
    s = time.perf_counter() - t
    assert got == n, (got, n)
    return n / s


def time_log(url: str, schema: dict, n: int, batch: int, group: str) -> float:
    stream = RedisLogStream(LogConfig.from_dict({"url": url, "schema": schema, "group": group,
                                                 "window_s": 60, "block_ms": 100}))
    got = 0
    t = time.perf_counter()
    for b in stream.batches(batch):
        got += len(b)
        if got >= n:
            break
    s = time.perf_counter() - t
    assert got == n, (got, n)
    return n / s


def summary(rates: list[float]) -> dict[str, float]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--categorical", type=int, default=8)
    ap.add_argument("--dense", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fsync", choices=["always", "everysec"], default="everysec",
                    help="the server's appendfsync (reads write the group's bookkeeping "
                         "to the append-only file too)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    n = args.records
    cols, raw = records(n, args.categorical, args.dense, seed=1)
    cat, dense = cols[: args.categorical], cols[args.categorical:]
    labels = (np.arange(n) % 7 == 0).astype(int)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        redis.Redis.from_url(server.url).config_set("appendfsync", args.fsync)
        csv = Path(tmp) / "records.csv"
        write_csv(csv, cols, raw, labels)
        write_log(server.url, cols, raw)
        csv_schema = {"label": "label", "categorical": cat, "dense": dense}
        log_schema = {"categorical": cat, "dense": dense}
        csv_rates, log_rates = [], []
        for r in range(args.repeats):  # alternate, so drifts of the machine hit both
            csv_rates.append(time_csv(csv, csv_schema, n, args.batch))
            log_rates.append(time_log(server.url, log_schema, n, args.batch, f"bench{r}"))
    result = {"records": n, "categorical": args.categorical, "dense": args.dense,
              "appendfsync": args.fsync,
              "batch": args.batch, "repeats": args.repeats,
              "csv_records_per_s": summary(csv_rates), "log_records_per_s": summary(log_rates),
              "log_over_csv": statistics.median(g / c for g, c in zip(log_rates, csv_rates,
                                                                      strict=True)),
              "python": platform.python_version(), "redis_py": redis.__version__,
              "hiredis": _has_hiredis()}
    for name in ("csv", "log"):
        s = result[f"{name}_records_per_s"]
        print(f"{name:>4}: {s['median']:>10,.0f} records/s  (min {s['min']:,.0f}, "
              f"max {s['max']:,.0f}, {args.repeats} repetitions)")
    print(f"log / csv (median of paired ratios): {result['log_over_csv']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
