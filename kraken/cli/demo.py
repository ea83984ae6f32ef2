"""``kraken demo``: continual training on the embedded default stream, end to end.

A DeepFM model learns from a drifting synthetic click stream (or MovieLens-1M in
time order with ``--data movielens-1m`` when the real data is present): embeddings
in a budgeted table with count-min admission, LRU eviction and row-wise AdaGrad;
dense layers on Adam; every batch scored before it is learned (progressive AUC).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from kraken.cli.train import train_and_report
from kraken.train.config import RunConfig

DATA_HINT = Path("../shared/data/movielens/ml-1m")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="continual training on the embedded synthetic stream")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "movielens-1m"])
    p.add_argument("--data-dir", default=str(DATA_HINT), help="ml-1m folder for movielens-1m")
    p.add_argument("--samples", type=int, default=300_000, help="samples to train on")
    p.add_argument("--model", default="deepfm")
    p.add_argument("--run-dir", default=None, help="default: a temporary directory")
    p.set_defaults(run=run)


def demo_config(data: str, data_dir: str, samples: int, model: str) -> RunConfig:
    if data == "synthetic":
        src: dict[str, Any] = {"source": "synthetic", "n_records": samples, "vocab": 200_000}
        capacity = 150_000
    else:
        src = {"source": "movielens-1m", "root": data_dir}
        capacity = 20_000
    return RunConfig.from_dict({
        "data": src,
        "model": {"name": model},
        "tables": {"emb": {
            "dim": 16, "capacity": capacity,
            "optimizer": {"type": "rowwise_adagrad", "lr": 0.05},
            "admission": {"type": "count_min", "threshold": 2, "width": 1 << 18},
            "eviction": [{"type": "lru", "high_watermark": 0.95, "low_watermark": 0.85}],
        }},
        "trainer": {"batch_size": 2048, "dense_lr": 0.002, "window": 50_000,
                    "log_every_s": 1.0, "max_samples": samples},
    })


def run(args: argparse.Namespace) -> int:
    config = demo_config(args.data, args.data_dir, args.samples, args.model)
    if args.run_dir:
        train_and_report(config, Path(args.run_dir), title="kraken demo")
    else:
        with tempfile.TemporaryDirectory(prefix="kraken-demo-") as tmp:
            train_and_report(config, Path(tmp), title="kraken demo")
    return 0
