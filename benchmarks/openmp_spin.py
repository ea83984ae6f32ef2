#!/usr/bin/env python
"""The OpenMP spin settings of a training process, paired: torch op, pull, push.

One round is what a training step interleaves: a torch matmul + relu of the DLRM's top
layer (4096 x 367 @ 367 x 512, 2 threads), then a training pull of 106k keys (uniform IDs
over 1M, row-wise AdaGrad, dim 16) and their push. Each setting runs in its
own process (``libgomp`` reads its environment once, when loaded), settings alternate
with the order rotated, and times are medians of 40 rounds per process; ratios are
paired per repetition against the first setting.

Settings (``--settings``, comma-separated, first = reference):

  default       GOMP_SPINCOUNT=300000 for both pools (libgomp's own default)
  numba-only    torch imported first, then kraken: its spin setting reaches numba's pool
  kraken-first  kraken imported first (as the kraken command): both pools spin 1000
  passive       OMP_WAIT_POLICY=passive for both pools

    python benchmarks/openmp_spin.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "default": ({"GOMP_SPINCOUNT": "300000"}, False),
    "numba-only": ({}, False),
    "kraken-first": ({}, True),
    "passive": ({"OMP_WAIT_POLICY": "passive"}, False),
}


def child(kraken_first: bool, rounds: int) -> None:
    if kraken_first:
        import kraken  # noqa: F401
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from kraken.optim import RowWiseAdaGrad
    from kraken.table import SparseTable, TableConfig

    t = SparseTable(TableConfig(dim=16, capacity=2_000_000, optimizer=RowWiseAdaGrad(lr=0.1)))
    keys = np.random.default_rng(0).integers(0, 1_000_000, 106_000).astype(np.int64)
    t.lookup(keys, train=True, now=1)
    x, w = torch.randn(4096, 367), torch.randn(367, 512)
    g = np.ones((keys.shape[0], 16), np.float32)

    def one() -> tuple[float, float, float]:
        a = time.perf_counter()
        torch.relu_(x @ w)
        b = time.perf_counter()
        t.lookup(keys, train=True, now=2)
        c = time.perf_counter()
        t.apply_gradients(keys, g, 2)
        return b - a, c - b, time.perf_counter() - c

    for _ in range(5):
        one()
    r = [one() for _ in range(rounds)]
    print(json.dumps({k: 1e3 * statistics.median(v)
                      for k, v in zip(("torch", "pull", "push"), zip(*r))}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--settings", default="numba-only,kraken-first,default,passive")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child == "kraken-first", args.rounds)
        return
    names = args.settings.split(",")
    res: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for rep in range(args.reps):
        for n in names[rep % len(names):] + names[:rep % len(names)]:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
            env.update(SETTINGS[n][0])
            out = subprocess.run([sys.executable, __file__, "--child", n, "--rounds",
                                  str(args.rounds)], capture_output=True, text=True, env=env,
                                 check=True)
            res[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {n:>12}: " + ", ".join(f"{k} {v:.2f} ms"
                                                    for k, v in res[n][-1].items()), flush=True)
    ref = names[0]
    print(f"\nms per call, median [min-max]; time / {ref} paired per repetition")
    for n in names:
        for k in ("torch", "pull", "push"):
            xs = [r[k] for r in res[n]]
            rat = [a[k] / b[k] for a, b in zip(res[n], res[ref])]
            print(f"{n:>12} {k:>5}: {statistics.median(xs):7.2f} [{min(xs):.2f}-{max(xs):.2f}]"
                  f"   {statistics.median(rat):.2f}x [{min(rat):.2f}-{max(rat):.2f}]")


if __name__ == "__main__":
    main()
