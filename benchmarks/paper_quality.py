#!/usr/bin/env python
"""The paper's result on real data: Adam-dense + row-wise sparse optimizers vs all-Adam.

One pass, progressive (predict-then-learn) AUC and logloss, and the bytes of the whole
live rows of every table of the model, for dense Adam combined with each sparse optimizer:

  adam        all-Adam (lazy Adam rows: 2D + 1 floats of state per row)
  rowwise     row-wise AdaGrad (1 float per row)
  radagrad    RAdaGrad, the paper's row-wise RMSProp (1 float per row)
  adagrad     element-wise AdaGrad (D floats per row)
  sgd         plain SGD (no state)

Each sparse optimizer's learning rate is first chosen on MovieLens-100K (``--tune``: a
small grid, best progressive AUC), then applied unchanged to the evaluation datasets, so
no optimizer is tuned on the data it is judged on.

Bytes are measured from the tables themselves, not from a formula: for every table of the
model, ``stats().memory_bytes`` (the hash index's arrays, slack included, plus the arena rows
committed so far: key, weights, optimizer state, metadata) less the admission sketch, whose
size is that of ``admission.new_state()`` (none for the default ``always``). The sketch is
left out because it counts keys seen, not rows kept.

``--memory`` runs the whole-row memory experiment (DeepFM on MovieLens-1M at dim 16 by
default): all-Adam fp32 with the first-order weights in a table of their own (``table``,
the layout of earlier versions) and in the embedding row (``segment``), row-wise AdaGrad
fp32 in both layouts, row-wise AdaGrad segments with fp16 and bf16 weights, and
``defaults``: row-wise AdaGrad with ``model.wide`` and ``precision`` left to what a user
of ``kraken train`` gets (``"auto"``: segment rows, fp16 for a row-wise table); each against
both all-Adam baselines, with its AUC against the row-wise fp32 runs.

Every other run (the optimizer comparison, ``--tune``, ``--equal-memory``) also leaves
``model.wide`` and ``precision`` at the run config's defaults.

``--equal-memory`` runs the second experiment: at a budget of M rows, the collisionless
table with count-min admission and LRU eviction against a hashing-trick table of M rows
(IDs folded modulo M, collisions by design), same model and data.

    python benchmarks/paper_quality.py --tune --datasets ml-1m --models deepfm --dims 4,16
    python benchmarks/paper_quality.py --equal-memory --budgets 2000,5000
    python benchmarks/paper_quality.py --memory --lrs '{"adam": 0.01, "rowwise": 0.03}'
    python benchmarks/paper_quality.py --memory --lrs '{"adam": 0.01, "rowwise": 0.03}' \
        --datasets criteo-8k,avazu-9k --models deepfm,wide_deep --dims 4,16 \
        --variants rowwise-fp32-table,rowwise-fp32-segment,rowwise-fp16-segment,defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # --data overrides it
SOURCES: dict[str, dict[str, Any]] = {}


def _sources(data: Path) -> dict[str, dict[str, Any]]:
    return {
        "ml-100k": {"source": "movielens-100k", "root": str(data / "movielens/ml-100k")},
        "ml-1m": {"source": "movielens-1m", "root": str(data / "movielens/ml-1m")},
        "criteo-8k": {"source": "criteo", "path": str(data / "criteo/kaggle_head_8k/train.txt")},
        "avazu-9k": {"source": "avazu", "path": str(data / "avazu/first_hour_9k/train.csv")},
        "synthetic": {"source": "synthetic", "n_records": 500_000, "vocab": 200_000},
    }


SOURCES.update(_sources(DATA))
BATCH = {"ml-100k": 512, "ml-1m": 1024, "criteo-8k": 128, "avazu-9k": 128, "synthetic": 2048}
OPTIMIZERS = {
    "adam": ("adam", [0.001, 0.003, 0.01, 0.03]),
    "rowwise": ("rowwise_adagrad", [0.01, 0.03, 0.1, 0.3]),
    "radagrad": ("radagrad", [0.0001, 0.0003, 0.001, 0.003]),
    "adagrad": ("adagrad", [0.01, 0.03, 0.1, 0.3]),
    "sgd": ("sgd", [0.3, 1.0, 3.0, 10.0]),
}


from kraken.errors import KrakenError  # noqa: E402

# --memory: (name, optimizer, precision of the weights, where the first-order weights live);
# None: the run config's default ("auto"), what a user who sets neither gets
VARIANTS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("adam-fp32-table", "adam", "fp32", "table"),
    ("adam-fp32-segment", "adam", "fp32", "segment"),
    ("rowwise-fp32-table", "rowwise", "fp32", "table"),
    ("rowwise-fp32-segment", "rowwise", "fp32", "segment"),
    ("rowwise-fp16-segment", "rowwise", "fp16", "segment"),
    ("rowwise-bf16-segment", "rowwise", "bf16", "segment"),
    ("defaults", "rowwise", None, None),
)


def run_once(dataset: str, model: str, dim: int, opt: str, lr: float,
             extra_table: dict[str, Any] | None = None,
             embedding: dict[str, Any] | None = None, wide: str | None = None,
             rows_only: bool = False) -> dict[str, Any]:
    """One pass; ``wide``: ``model.wide`` (None: the default); ``rows_only``: no model,
    every batch's keys only pulled with
    ``train=True`` (admitted as in training), so the tables hold the rows training would
    keep (with ``always`` admission and no eviction, exactly those) and AUC is NaN."""
    from kraken.train import Trainer
    from kraken.train.config import RunConfig, build_run

    kind = OPTIMIZERS[opt][0]
    table = {"dim": dim, "capacity": 200_000, "optimizer": {"type": kind, "lr": lr},
             "initializer": {"type": "normal", "std": 0.01}, **(extra_table or {})}
    cfg = RunConfig.from_dict({
        "data": dict(SOURCES[dataset]),
        "model": {"name": model, **({"wide": wide} if wide is not None else {})},
        "tables": {"emb": table},
        "trainer": {"batch_size": BATCH[dataset], "dense_lr": 0.001, "window": 10**9,
                    "log_every_s": 3600.0, "seed": 0},
        "embedding": embedding or {},
    })
    run = build_run(cfg)
    t0 = time.perf_counter()
    if rows_only:
        n = 0
        for i, batch in enumerate(run.stream.batches(BATCH[dataset])):
            run.embedding.pull(run.embedding.prepare(batch), train=True, now=i + 1)
            n += len(batch)
        metrics, samples = {"auc": float("nan"), "logloss": float("nan")}, n
    else:
        s = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                    config=cfg.trainer).run()
        metrics, samples = s.metrics, s.samples
    seconds = time.perf_counter() - t0
    stats = run.ps.stats()
    tables = {n: {"dim": c.dim, "precision": c.precision.value, "optimizer": c.optimizer.kind,
                  "live_rows": stats[n].live_rows, "index_slots": stats[n].index_slots,
                  "rows_bytes": rows_bytes(stats[n].memory_bytes, c)}
              for n, c in run.ps.tables.items()}
    total = sum(t["rows_bytes"] for t in tables.values())
    pinned = run.config  # every "auto" setting as this run resolved it
    return {"dataset": dataset, "model": model, "dim": dim, "optimizer": opt, "lr": lr,
            "wide": None if pinned.wide is None else pinned.wide.value,
            "precision": pinned.tables["emb"].precision.value,
            "auc": metrics["auc"], "logloss": metrics["logloss"], "samples": samples,
            "live_rows": sum(t["live_rows"] for t in tables.values()),
            "keys": tables["emb"]["live_rows"], "sparse_bytes": total, "tables": tables,
            "seconds": seconds}


def rows_bytes(memory_bytes: int, cfg: Any) -> int:
    """Whole live rows of a table from its ``stats().memory_bytes`` (index + committed arena
    + admission sketch): the sketch's bytes, ``admission.new_state().nbytes``, taken out."""
    sketch = cfg.admission.new_state()
    return int(memory_bytes - (0 if sketch is None else sketch.nbytes))


def memory(dataset: str, model: str, dim: int, lrs: dict[str, float],
           names: list[str], rows_only: bool = False) -> list[dict[str, Any]]:
    """The ``--memory`` experiment: each variant of :data:`VARIANTS` named in ``names``."""
    out: list[dict[str, Any]] = []
    known = {v[0]: v for v in VARIANTS}
    for name in names:  # in the order given
        if name not in known:
            raise SystemExit(f"--variants: unknown {name!r}; known: {list(known)}")
        _, opt, precision, wide = known[name]
        r = run_once(dataset, model, dim, opt, lrs[opt],
                     {} if precision is None else {"precision": precision}, wide=wide,
                     rows_only=rows_only)
        r["variant"] = name
        out.append(r)
        per = ", ".join(f"{n} {t['rows_bytes'] / 2**20:.3f} MiB ({t['live_rows']:,} rows, "
                        f"{t['index_slots']:,} slots)" for n, t in r["tables"].items())
        print(f"{dataset} {model} dim {dim} {name:>21} ({r['wide']}, {r['precision']}): "
              f"AUC {r['auc']:.4f} logloss {r['logloss']:.4f} rows {r['sparse_bytes']:,} B = "
              f"{r['sparse_bytes'] / r['keys']:.1f} B/key [{per}] {r['seconds']:.0f}s",
              flush=True)
    by = {r["variant"]: r for r in out}
    print(f"\n{'variant':>21}  {'AUC':>6}  {'logloss':>7}  {'bytes':>10}  "
          + "  ".join(f"/{b}" for b in ("adam-fp32-table", "adam-fp32-segment") if b in by)
          + "  " + "  ".join(f"dAUC vs {b}" for b in ("rowwise-fp32-table",
                                                      "rowwise-fp32-segment") if b in by))
    for r in out:
        ratios = [f"{r['sparse_bytes'] / by[b]['sparse_bytes']:>{len(b) + 1}.3f}x"
                  for b in ("adam-fp32-table", "adam-fp32-segment") if b in by]
        d_auc = [f"{r['auc'] - by[b]['auc']:>+{len(b) + 8}.4f}"
                 for b in ("rowwise-fp32-table", "rowwise-fp32-segment") if b in by]
        print(f"{r['variant']:>21}  {r['auc']:.4f}  {r['logloss']:.5f}  "
              f"{r['sparse_bytes']:>10,}  " + " ".join(ratios) + "  " + "  ".join(d_auc),
              flush=True)
    return out


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
    p.add_argument("--memory", action="store_true",
                   help="whole live rows: all-Adam vs row-wise, wide table vs segment, "
                        "fp16/bf16, and the defaults")
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                   help="with --memory: which variants")
    p.add_argument("--rows-only", action="store_true",
                   help="with --memory: bytes only (keys pulled for training, no model)")
    p.add_argument("--budgets", default="2000,5000")
    p.add_argument("--json", default=None)
    p.add_argument("--data", default=str(DATA), help="the shared data folder (read in place)")
    args = p.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"real data not found at {data}")
    SOURCES.update(_sources(data))
    models, dims = args.models.split(","), [int(d) for d in args.dims.split(",")]
    results: list[dict[str, Any]] = []
    if args.memory:
        lrs = json.loads(args.lrs) if args.lrs else {o: g[1] for o, (_, g) in OPTIMIZERS.items()}
        for dataset in args.datasets.split(","):
            for model in models:
                for dim in dims:
                    results += memory(dataset, model, dim, lrs, args.variants.split(","),
                                      args.rows_only)
    elif args.equal_memory:
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
