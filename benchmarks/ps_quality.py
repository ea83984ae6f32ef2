#!/usr/bin/env python
"""Does sharding change what the model learns? One config, in process and on shards.

Trains the same run file (default ``examples/movielens-1m.toml``: DeepFM, one pass over
MovieLens-1M in time order) with its tables in process (``LocalPS``) and on ``kraken ps``
shard processes with ``push_staleness`` 0 and 1, and prints the progressive AUC and
logloss of each. With staleness 0 a sharded run applies exactly the updates of the local
one, so the figures should be identical (any difference comes from per-shard admission
sketches seeing fewer keys); with staleness 1 a pull may miss the previous batch's push.

    python benchmarks/ps_quality.py
    python benchmarks/ps_quality.py --config examples/synthetic.toml --max-samples 200000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from kraken.ps.processes import ShardProcesses
from kraken.train import Trainer
from kraken.train.config import build_run, load_config

ROOT = Path(__file__).resolve().parents[1]


def train(config_path: str, shards: int, staleness: int, max_samples: int | None
          ) -> dict[str, float]:
    overrides = {"ps": {"push_staleness": staleness}}
    if max_samples:
        overrides["trainer"] = {"max_samples": max_samples}
    cfg = load_config(config_path, overrides)
    procs = None
    if shards:
        path = Path(tempfile.mkdtemp()) / "run.json"
        path.write_text(json.dumps(cfg.to_dict()))
        procs = ShardProcesses(path, shards)
    try:
        run = build_run(cfg, procs.addresses if procs else None)
        t0 = time.perf_counter()
        s = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                    config=dataclasses.replace(cfg.trainer, log_every_s=3600.0)).run()
        run.ps.close()
        return {"auc": s.metrics["auc"], "logloss": s.metrics["logloss"],
                "samples": s.samples, "seconds": time.perf_counter() - t0}
    finally:
        if procs is not None:
            procs.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "examples" / "movielens-1m.toml"))
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--max-samples", type=int, default=None)
    args = p.parse_args()
    os.chdir(ROOT)  # example paths are relative to the repository
    runs = {"in process": (0, 0), f"{args.shards} shards, k=0": (args.shards, 0),
            f"{args.shards} shards, k=1": (args.shards, 1)}
    results = {}
    for name, (shards, k) in runs.items():
        results[name] = r = train(args.config, shards, k, args.max_samples)
        print(f"{name:>16}: AUC {r['auc']:.5f}  logloss {r['logloss']:.5f}  "
              f"{r['samples']:,} samples in {r['seconds']:.0f} s", flush=True)
    base = results["in process"]
    for name, r in results.items():
        print(f"{name:>16}: AUC {r['auc'] - base['auc']:+.5f} vs in process")


if __name__ == "__main__":
    main()
