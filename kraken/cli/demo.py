"""``kraken demo``: a drifting click stream trained into a budgeted sparse table.

A logistic-regression model (one weight per feature ID, the "wide" part of a
ranking model) learns from a synthetic stream whose popular IDs drift over time.
The table admits IDs on their second sighting (count-min sketch), evicts the
least recently used rows when it passes 90% of a hard budget, and trains with
row-wise AdaGrad. Each phase prints what happened: rows admitted and evicted,
live rows against the budget, memory, and progressive (predict-then-learn) AUC.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from kraken.optim import RowWiseAdaGrad
from kraken.table import LRU, CountMin, SparseTable, TableConfig, Zeros, field_keys
from kraken.table.init import _uniform01_batch


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train a budgeted sparse table on a drifting stream")
    p.add_argument("--steps", type=int, default=200, help="batches to train (default 200)")
    p.add_argument("--batch", type=int, default=4096, help="samples per batch")
    p.add_argument("--capacity", type=int, default=60_000, help="row budget of the table")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def _auc(label: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(order.shape[0], dtype=np.float64)
    ranks[order] = np.arange(1, order.shape[0] + 1)
    pos = label > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class _DriftingStream:
    """Batches of ``fields`` Zipf-distributed IDs whose popular set drifts with time."""

    def __init__(self, fields: int, vocab: int, seed: int) -> None:
        self.fields, self.vocab = fields, vocab
        self.rng = np.random.default_rng(seed)

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        ranks = np.minimum(self.rng.zipf(1.2, size=(size, self.fields)), self.vocab) - 1
        ids = ranks + step * 40  # the popular head shifts by 40 IDs a batch
        keys = np.stack([field_keys(f, ids[:, f]) for f in range(self.fields)], axis=1)
        truth = (_uniform01_batch(keys.reshape(-1), 7).reshape(keys.shape) - 0.5) * 3.0
        p = 1.0 / (1.0 + np.exp(-truth.sum(axis=1)))
        return keys, (self.rng.random(size) < p).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    cfg = TableConfig(dim=1, capacity=args.capacity, optimizer=RowWiseAdaGrad(lr=0.1),
                      admission=CountMin(threshold=2, width=1 << 18),
                      eviction=LRU(high_watermark=0.9, low_watermark=0.8),
                      initializer=Zeros(), seed=args.seed)
    table = SparseTable(cfg)
    stream = _DriftingStream(fields=8, vocab=200_000, seed=args.seed)
    print(f"kraken demo: {args.steps} batches x {args.batch} samples, 8 fields, "
          f"budget {args.capacity:,} rows, {cfg.optimizer.kind}, count-min admission, LRU")
    print(f"{'batch':>6} {'live rows':>10} {'admitted':>9} {'evicted':>8} {'memory':>9} "
          f"{'AUC':>6} {'logloss':>8}")
    t0 = time.perf_counter()
    labels, scores, prev = [], [], table.stats()
    report_every = max(1, args.steps // 10)
    for step in range(args.steps):
        keys, y = stream.batch(step, args.batch)
        w = table.lookup(keys, train=True, now=step)[..., 0]  # float32[B, F]
        p = 1.0 / (1.0 + np.exp(-w.sum(axis=1)))
        labels.append(y)
        scores.append(p)
        grad = np.repeat((p - y)[:, None], keys.shape[1], axis=1).astype(np.float32)
        table.apply_gradients(keys.reshape(-1), grad.reshape(-1, 1), now=step)
        table.evict(now=step)
        if (step + 1) % report_every == 0:
            s = table.stats()
            yy, pp = np.concatenate(labels), np.clip(np.concatenate(scores), 1e-7, 1 - 1e-7)
            ll = float(-np.mean(yy * np.log(pp) + (1 - yy) * np.log(1 - pp)))
            print(f"{step + 1:>6} {s.live_rows:>10,} {s.admitted - prev.admitted:>9,} "
                  f"{s.evicted - prev.evicted:>8,} {s.memory_bytes / 2**20:>7.1f}MB "
                  f"{_auc(yy, pp):>6.3f} {ll:>8.4f}")
            labels, scores, prev = [], [], s
    s = table.stats()
    print(f"done in {time.perf_counter() - t0:.1f}s: {s.admitted:,} rows admitted, "
          f"{s.not_admitted:,} first sightings held back by the sketch, {s.evicted:,} evicted, "
          f"{s.live_rows:,} live of {s.capacity:,} (peak index {s.index_slots:,} slots)")
    return 0
