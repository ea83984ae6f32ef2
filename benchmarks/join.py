#!/usr/bin/env python
"""Throughput of the online sample join (``kraken.data.Joiner``), one core.

Impressions arrive at ``--rate`` per event-time second in batches of ``--batch`` (``--fields``
sparse fields, 4 dense values, one multi-valued field of 0-3 values); ``--click`` of them
get a click 1-59 s later, in the same read. Each step: ``add_impressions``, ``add_actions``,
``emit``. With the defaults the 300 s window holds ~300k impressions pending, so every
step also expires a batch of negatives. Prints impressions joined per second.

    python benchmarks/join.py [--steps 250] [--rate 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kraken.data import Batch, Jagged, JoinConfig, Joiner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--fields", type=int, default=20)
    p.add_argument("--rate", type=int, default=1000, help="impressions per event-time second")
    p.add_argument("--click", type=float, default=0.05)
    p.add_argument("--window", type=int, default=300)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    b = a.batch
    lens = rng.integers(0, 4, b)
    feat = Batch(keys=rng.integers(0, 1 << 40, (b, a.fields)).astype(np.int64),
                 dense=rng.random((b, 4), dtype=np.float32), label=np.zeros(b, np.float32),
                 event_time=np.zeros(b, np.int64),
                 jagged={"g": Jagged.from_lengths(rng.integers(0, 1000, lens.sum()), lens)})
    j = Joiner(JoinConfig(window_s=a.window))
    emitted = 0
    t0 = time.perf_counter()
    for s in range(a.steps):
        rid = np.arange(s * b, (s + 1) * b, dtype=np.uint64)
        ts = (1_700_000_000 + rid // np.uint64(a.rate)).astype(np.int64)
        j.add_impressions(rid, ts, feat)
        clicked = rng.random(b) < a.click
        j.add_actions(rid[clicked], ts[clicked] + rng.integers(1, 60, int(clicked.sum())),
                      np.zeros(int(clicked.sum()), np.int8))
        out = j.emit()
        emitted += 0 if out is None else len(out)
    dt = time.perf_counter() - t0
    c = j.counters
    print(f"{a.steps * b / dt:,.0f} impressions/s joined ({dt:.2f} s); emitted {emitted}; "
          f"pending {c['pending']}, recent {c['recent']}, {j.nbytes / 1e6:.0f} MB held")


if __name__ == "__main__":
    main()
