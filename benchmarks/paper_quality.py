#!/usr/bin/env python
"""The paper's result on real data: Adam-dense + row-wise sparse optimizers vs all-Adam.

One pass, progressive (predict-then-learn) AUC and logloss, and the bytes of sparse
state, for dense Adam combined with each sparse optimizer:

  adam        all-Adam (lazy Adam rows: 2D + 1 floats of state per row)
  rowwise     row-wise AdaGrad (1 float per row)
  radagrad    RAdaGrad, the paper's row-wise RMSProp (1 float per row)
  adagrad     element-wise AdaGrad (D floats per row)
  sgd         plain SGD (no state)

Each sparse optimizer's learning rate is first chosen on MovieLens-100K (``--tune``: a
small grid, best progressive AUC), then applied unchanged to the evaluation datasets, so
no optimizer is tuned on the data it is judged on.

``--equal-memory`` runs the second experiment: at a budget of M rows, the collisionless
table with count-min admission and LRU eviction against a hashing-trick table of M rows
(IDs folded modulo M, collisions by design), same model and data.

    python benchmarks/paper_quality.py --tune --datasets ml-1m --models deepfm --dims 4,16
    python benchmarks/paper_quality.py --equal-memory --budgets 2000,5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = {
    "ml-100k": {"source": "movielens-100k", "root": str(DATA / "movielens/ml-100k")},
    "ml-1m": {"source": "movielens-1m", "root": str(DATA / "movielens/ml-1m")},
    "criteo-8k": {"source": "criteo", "path": str(DATA / "criteo/kaggle_head_8k/train.txt")},
    "avazu-9k": {"source": "avazu", "path": str(DATA / "avazu/first_hour_9k/train.csv")},
    "synthetic": {"source": "synthetic", "n_records": 500_000, "vocab": 200_000},
}
BATCH = {"ml-100k": 512, "ml-1m": 1024, "criteo-8k": 128, "avazu-9k": 128, "synthetic": 2048}
OPTIMIZERS = {
    "adam": ("adam", [0.001, 0.003, 0.01, 0.03]),
    "rowwise": ("rowwise_adagrad", [0.01, 0.03, 0.1, 0.3]),
    "radagrad": ("radagrad", [0.0001, 0.0003, 0.001, 0.003]),
    "adagrad": ("adagrad", [0.01, 0.03, 0.1, 0.3]),
    "sgd": ("sgd", [0.3, 1.0, 3.0, 10.0]),
}


from kraken.errors import KrakenError  # noqa: E402


def run_once(dataset: str, model: str, dim: int, opt: str, lr: float,
             extra_table: dict[str, Any] | None = None,
             embedding: dict[str, Any] | None = None) -> dict[str, Any]:
    from kraken.train import Trainer
    from kraken.train.config import RunConfig, build_run

    kind = OPTIMIZERS[opt][0]
    table = {"dim": dim, "capacity": 200_000, "optimizer": {"type": kind, "lr": lr},
             "initializer": {"type": "normal", "std": 0.01}, **(extra_table or {})}
    cfg = RunConfig.from_dict({
        "data": dict(SOURCES[dataset]), "model": {"name": model},
        "tables": {"emb": table},
        "trainer": {"batch_size": BATCH[dataset], "dense_lr": 0.001, "window": 10**9,
                    "log_every_s": 3600.0, "seed": 0},
        "embedding": embedding or {},
    })
    run = build_run(cfg)
    t0 = time.perf_counter()
    s = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                config=cfg.trainer).run()
    live = sum(t["live_rows"] for t in s.tables.values())
    state_bytes = sum(run.ps.stats()[n].live_rows * _row_bytes(run.ps.tables[n])
                      for n in run.ps.tables)
    return {"dataset": dataset, "model": model, "dim": dim, "optimizer": opt, "lr": lr,
            "auc": s.metrics["auc"], "logloss": s.metrics["logloss"], "samples": s.samples,
            "live_rows": live, "sparse_bytes": state_bytes,
            "seconds": time.perf_counter() - t0}


def _row_bytes(cfg: Any) -> int:
    """Bytes of one live row: 8-byte key + weights + optimizer state + 12 bytes metadata."""
    return 8 + cfg.dim * cfg.precision.itemsize + 4 * cfg.state_width + 12


def tune(models: list[str], dim: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for opt, (_, grid) in OPTIMIZERS.items():
        scores = []
        for lr in grid:
            try:
                aucs = [run_once("ml-100k", m, dim, opt, lr)["auc"] for m in models]
            except KrakenError as exc:  # a learning rate that diverges is simply not chosen
                print(f"tune {opt:>9} lr {lr:<7} failed: {exc}", flush=True)
                continue
            scores.append((sum(aucs) / len(aucs), lr))
            print(f"tune {opt:>9} lr {lr:<7} AUC {scores[-1][0]:.4f}", flush=True)
        best[opt] = max(scores)[1]
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", default="ml-1m")
    p.add_argument("--models", default="deepfm")
    p.add_argument("--dims", default="16")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--tune", action="store_true", help="choose learning rates on ml-100k first")
    p.add_argument("--lrs", default=None, help="JSON {optimizer: lr}, instead of --tune")
    p.add_argument("--equal-memory", action="store_true")
    p.add_argument("--budgets", default="2000,5000")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    models, dims = args.models.split(","), [int(d) for d in args.dims.split(",")]
    results: list[dict[str, Any]] = []
    if args.equal_memory:
        for dataset in args.datasets.split(","):
            for budget in [int(b) for b in args.budgets.split(",")]:
                for variant in ("collisionless", "hashed"):
                    if variant == "collisionless":
                        extra = {"capacity": budget,
                                 "admission": {"type": "count_min", "threshold": 2},
                                 "eviction": [{"type": "lru", "high_watermark": 1.0,
                                               "low_watermark": 0.9}]}
                        emb = {}
                    else:
                        extra, emb = {"capacity": budget}, {"hash_buckets": budget}
                    for model in models:
                        r = run_once(dataset, model, dims[0], "rowwise", 0.03, extra, emb)
                        r.update(variant=variant, budget=budget)
                        results.append(r)
                        print(f"{dataset} {model} budget {budget:>6} {variant:>13}: "
                              f"AUC {r['auc']:.4f} logloss {r['logloss']:.4f} "
                              f"live {r['live_rows']:,}", flush=True)
    else:
        lrs = json.loads(args.lrs) if args.lrs else (
            tune(models, dims[-1]) if args.tune else {o: g[1] for o, (_, g) in OPTIMIZERS.items()})
        print("learning rates:", lrs, flush=True)
        for dataset in args.datasets.split(","):
            for model in models:
                for dim in dims:
                    base = None
                    for opt in args.optimizers.split(","):
                        try:
                            r = run_once(dataset, model, dim, opt, lrs[opt])
                        except KrakenError as exc:
                            print(f"{dataset} {model} dim {dim:>2} {opt:>9}: failed: {exc}",
                                  flush=True)
                            results.append({"dataset": dataset, "model": model, "dim": dim,
                                            "optimizer": opt, "failed": str(exc)})
                            continue
                        results.append(r)
                        base = base or (r if opt == "adam" else None)
                        rel = (f" dAUC {r['auc'] - base['auc']:+.4f} mem "
                               f"{r['sparse_bytes'] / base['sparse_bytes']:.2f}x"
                               if base and opt != "adam" else "")
                        print(f"{dataset} {model} dim {dim:>2} {opt:>9}: AUC {r['auc']:.4f} "
                              f"logloss {r['logloss']:.4f} sparse {r['sparse_bytes'] / 2**20:.2f}"
                              f" MiB ({r['live_rows']:,} rows) {r['seconds']:.0f}s{rel}",
                              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
