#!/usr/bin/env python
"""The table's pull before and after a change, in one process: this checkout's ``kraken``
beside the ``kraken`` of a git ref (default ``main``), loaded as the package ``kraken_ref``.

Workloads (each gives new/ref speed, median [min-max] over paired samples, the two
implementations alternating and the first of them rotating):

admit    ``lookup(keys, train=True)`` of all-new keys, ``--admit-batch`` keys per batch into
         an empty table of dim 16 (``--admit-batches`` batches; each batch is a sample).
insert   ``lookup(keys, train=True)`` at 90% present (Zipf) / 10% new keys, batches of 100k,
         on a table of ``--live`` keys; also against pandas ``Int64HashTable`` lookup +
         ``map_keys_to_values`` (as in ``table_ops.py --section insert``).
lookup   ``lookup(keys)`` (probe + gather) of present keys, Zipf and uniform, batches of 100k,
         on a table of ``--live`` keys; also against ``torch.index_select``.

``--precision fp16`` (or bf16) stores the rows of every table in 16 bits (the lookup
section then checks the two implementations against each other rather than against the
dense array). Both tables must return identical rows (checked on every admit batch). ``--cpu-time``
measures the calling thread's CPU time instead of wall time (run with
``NUMBA_NUM_THREADS=1``): on a shared machine it leaves out the time the process waits for
a core.

    python benchmarks/pull_ab.py --ref main --section admit --section insert --section lookup
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))  # "new" is this checkout, not an installed kraken
from table_ops import make_keys, positions  # noqa: E402


def load_ref(ref: str, into: Path) -> Any:
    """``git archive ref kraken`` unpacked as the package ``kraken_ref`` and imported."""
    tar = subprocess.run(["git", "archive", ref, "kraken"], cwd=ROOT, capture_output=True,
                         check=True).stdout
    subprocess.run(["tar", "x"], cwd=into, input=tar, check=True)
    (into / "kraken").rename(into / "kraken_ref")
    for f in (into / "kraken_ref").rglob("*.py"):
        src = f.read_text()
        src = re.sub(r"\bfrom kraken([. ])", r"from kraken_ref\1", src)
        f.write_text(re.sub(r"\bimport kraken\b", "import kraken_ref", src))
    sys.path.insert(0, str(into))
    import kraken_ref

    return kraken_ref


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3g} [{min(xs):.3g}-{max(xs):.3g}]"


def alternate(fns: dict[str, Callable[[], Any]], reps: int,
              clock: Callable[[], float]) -> dict[str, list[float]]:
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            gc.disable()
            t0 = clock()
            fns[n]()
            out[n].append(clock() - t0)
            gc.enable()
    return out


def ratios(tm: dict[str, list[float]], num: str, den: str) -> str:
    """Speed of ``num`` over ``den`` (time of den / time of num), per sample."""
    return summary([d / n for n, d in zip(tm[num], tm[den])])


def admit(mods: dict[str, Any], args: argparse.Namespace, clock: Callable[[], float]) -> None:
    n, nb = args.admit_batch, args.admit_batches
    tabs = {name: m.SparseTable(m.TableConfig(dim=16, capacity=n * nb + 1024,
                                              admission=m.Always(),
                                              precision=m.Precision(args.precision)))
            for name, m in mods.items()}
    for m in mods.values():  # load the kernels (serial and parallel builds)
        w = m.SparseTable(m.TableConfig(dim=16, capacity=1 << 17))
        w.lookup(make_keys(0, 1 << 16, salt=0xABC), train=True)
    tm: dict[str, list[float]] = {k: [] for k in tabs}
    names = list(tabs)
    for b in range(nb):
        keys = make_keys(b * n, n, salt=0xAD)
        outs = {}
        for name in names if b % 2 == 0 else names[::-1]:
            gc.collect()
            gc.disable()
            t0 = clock()
            outs[name] = tabs[name].lookup(keys, train=True, now=b)
            tm[name].append(clock() - t0)
            gc.enable()
        assert np.array_equal(outs["new"], outs["ref"]), "new and ref rows differ"
        del outs
    rates = {k: [n / t for t in v] for k, v in tm.items()}
    print(f"admit: {nb} batches of {n:,} all-new keys into an empty table (dim 16)")
    for k in names:
        print(f"  {k:4s} rows/s {summary(rates[k])}")
    print(f"  new/ref {ratios(tm, 'new', 'ref')}")


def _table(m: Any, keys: np.ndarray, dense: np.ndarray | None, cap: int,
           precision: str = "fp32") -> Any:
    t = m.SparseTable(m.TableConfig(dim=16, capacity=cap, optimizer=m.SGD(),
                                    admission=m.Always(), precision=m.Precision(precision)))
    for i in range(0, keys.shape[0], 1 << 20):
        if dense is None:
            t.lookup(keys[i:i + (1 << 20)], train=True, now=0)
        else:
            t.assign(keys[i:i + (1 << 20)], dense[i:i + (1 << 20)], now=0)
    return t


def insert(mods: dict[str, Any], args: argparse.Namespace, clock: Callable[[], float]) -> None:
    import pandas as pd

    live, batch, nb, reps = args.live, 100_000, 5, args.reps
    rng = np.random.default_rng(2)
    keys = make_keys(0, live)
    perm = rng.permutation(live)
    cap = live + (reps + 2) * nb * batch
    tabs = {name: _table(m, keys, None, cap, args.precision) for name, m in mods.items()}
    ht = pd.core.algorithms.htable.Int64HashTable(live)
    ht.map_locations(keys)
    nxt = [live]

    def op_pandas(b: np.ndarray) -> np.ndarray:
        rows = ht.lookup(b)
        absent = rows < 0
        if absent.any():
            miss = b[absent]
            u = pd.unique(miss)
            ht.map_keys_to_values(u, np.arange(nxt[0], nxt[0] + u.shape[0]))
            nxt[0] += u.shape[0]
            rows[absent] = ht.lookup(miss)
        return rows

    fresh = [live]

    def batches() -> list[np.ndarray]:
        out = []
        for _ in range(nb):
            b = np.concatenate([keys[positions(rng, "zipf", batch - batch // 10, live, perm)],
                                make_keys(fresh[0], batch // 10, salt=0xF00D)])
            fresh[0] += batch // 10
            rng.shuffle(b)
            out.append(b)
        return out

    ops: dict[str, Callable[[np.ndarray], Any]] = {
        "new": lambda b: tabs["new"].lookup(b, train=True, now=1),
        "ref": lambda b: tabs["ref"].lookup(b, train=True, now=1), "pandas": op_pandas}
    for b in batches():
        for op in ops.values():
            op(b)
    tm: dict[str, list[float]] = {k: [] for k in ops}
    names = list(ops)
    for r in range(reps):
        bs = batches()
        for n in names[r % 3:] + names[:r % 3]:
            gc.collect()
            gc.disable()
            t0 = clock()
            for b in bs:
                ops[n](b)
            tm[n].append(clock() - t0)
            gc.enable()
    print(f"insert: {live:,} live keys, {nb} batches of {batch:,} (90% Zipf present / 10% "
          f"new) per sample, {reps} samples")
    for k in names:
        print(f"  {k:6s} keys/s {summary([nb * batch / t for t in tm[k]])}")
    print(f"  new/ref {ratios(tm, 'new', 'ref')}; new/pandas {ratios(tm, 'new', 'pandas')}; "
          f"ref/pandas {ratios(tm, 'ref', 'pandas')}")


def lookup(mods: dict[str, Any], args: argparse.Namespace, clock: Callable[[], float]) -> None:
    import torch

    torch.set_num_threads(args.torch_threads)
    live = args.live
    rng = np.random.default_rng(1)
    keys = make_keys(0, live)
    perm = rng.permutation(live)
    dense = rng.random((live, 16), dtype=np.float32)
    tabs = {name: _table(m, keys, dense, live, args.precision) for name, m in mods.items()}
    dt = torch.from_numpy(dense)
    print(f"lookup: {live:,} live keys of dim 16, 5 batches of 100k per sample, "
          f"{args.reps} samples; index_select on {args.torch_threads} thread(s)")
    for dist in ("zipf", "uniform"):
        pos = [positions(rng, dist, 100_000, live, perm) for _ in range(5)]
        q = [keys[p] for p in pos]
        pt = [torch.from_numpy(p) for p in pos]
        for t in tabs.values():
            want = dense[pos[0]] if args.precision == "fp32" else tabs["ref"].lookup(q[0])
            assert np.array_equal(t.lookup(q[0]), want)
        fns = {"new": lambda q=q: [tabs["new"].lookup(k) for k in q],
               "ref": lambda q=q: [tabs["ref"].lookup(k) for k in q],
               "index_select": lambda pt=pt: [torch.index_select(dt, 0, p) for p in pt]}
        alternate(fns, 1, clock)
        tm = alternate(fns, args.reps, clock)
        print(f"  {dist:8s} new/ref {ratios(tm, 'new', 'ref')}; new/index_select "
              f"{ratios(tm, 'new', 'index_select')}; ref/index_select "
              f"{ratios(tm, 'ref', 'index_select')}")
    tabs.clear()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="main")
    p.add_argument("--section", action="append", choices=("admit", "insert", "lookup"))
    p.add_argument("--admit-batch", type=int, default=1 << 20)
    p.add_argument("--admit-batches", type=int, default=8)
    p.add_argument("--live", type=int, default=4_000_000)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--cpu-time", action="store_true")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    args = p.parse_args()
    clock = time.thread_time if args.cpu_time else time.perf_counter
    import kraken

    with tempfile.TemporaryDirectory() as tmp:
        mods = {"new": kraken, "ref": load_ref(args.ref, Path(tmp))}
        print(f"new = this checkout, ref = {args.ref}; "
              f"{'thread CPU time' if args.cpu_time else 'wall time'}; {args.precision} rows")
        for s in args.section or ["admit", "insert", "lookup"]:
            {"admit": admit, "insert": insert, "lookup": lookup}[s](mods, args, clock)
            gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
