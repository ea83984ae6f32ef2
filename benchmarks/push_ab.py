"""``apply_gradients`` of this checkout against another git revision and torch, in ONE process.

The batch of ``table_ops.py --section optim``: a 1M-row table of dim 16, 200k keys = 50k
unique rows x 4, shuffled, N(0, 0.1) gradients; torch's optimizer steps the uncoalesced
sparse gradient of ``nn.Embedding(sparse=True)`` (2 threads). The other revision's
``kraken`` package is extracted with ``git archive`` into a temporary folder as
``kraken_ref``, so both versions run side by side; methods alternate in rotating order
every repetition, and ratios are per repetition (median [min-max]), which keeps a shared
machine's noise out of the comparison.

    python benchmarks/push_ab.py --ref main --reps 15
    python benchmarks/push_ab.py --ref main --precision FP16   # 16-bit rows, no torch
    python benchmarks/push_ab.py --breakdown          # per-pass ms of this checkout only

Not part of the test suite; prints a table.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # "new" is this checkout, not an installed kraken


def load_ref(ref: str, into: Path) -> Any:
    """The ``kraken`` package at git ``ref``, imported as ``kraken_ref``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "kraken"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    (into / "kraken").rename(into / "kraken_ref")
    pat = re.compile(r"\b(from|import) kraken\b")
    for f in (into / "kraken_ref").rglob("*.py"):
        f.write_text(pat.sub(r"\1 kraken_ref", f.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module("kraken_ref")


def make_batch(n_rows: int, n_uniq: int, dup: int, dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    with np.errstate(over="ignore"):  # an odd multiplier mod 2**64: distinct keys
        keys_all = (np.arange(n_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                    ).view(np.int64)
    uniq = rng.choice(n_rows, size=n_uniq, replace=False)
    pos = np.repeat(uniq, dup)
    rng.shuffle(pos)
    return {"keys_all": keys_all, "pos": pos, "bkeys": keys_all[pos],
            "grads": rng.standard_normal((pos.shape[0], dim), dtype=np.float32)
            * np.float32(0.1),
            "init": (rng.random((n_rows, dim), dtype=np.float32) - 0.5) * np.float32(0.1)}


def build(k: Any, opt: Any, b: dict[str, np.ndarray], precision: str = "FP32") -> Any:
    n, d = b["init"].shape
    t = k.SparseTable(k.TableConfig(dim=d, capacity=n, optimizer=opt, admission=k.Always(),
                                    precision=getattr(k.Precision, precision)))
    for i in range(0, n, 1 << 20):
        t.assign(b["keys_all"][i:i + (1 << 20)], b["init"][i:i + (1 << 20)], now=0)
    return t


CLOCK = time.perf_counter


def timed(fn: Any, calls: int) -> float:
    t0 = CLOCK()
    for _ in range(calls):
        fn()
    return CLOCK() - t0


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    return (f"{fmt.format(statistics.median(xs))} "
            f"[{fmt.format(min(xs))}-{fmt.format(max(xs))}]")


def ab(args: argparse.Namespace) -> None:
    import torch

    import kraken

    torch.set_num_threads(args.threads)
    b = make_batch(args.rows, args.unique, args.dup, 16)
    with tempfile.TemporaryDirectory() as tmp:
        ref = load_ref(args.ref, Path(tmp))
        cases = [("SGD", "SGD", {"lr": 0.01}, lambda p: torch.optim.SGD([p], lr=0.01)),
                 ("AdaGrad", "AdaGrad", {"lr": 0.01},
                  lambda p: torch.optim.Adagrad([p], lr=0.01, eps=1e-10)),
                 ("Adam", "Adam", {"lr": 0.001}, lambda p: torch.optim.SparseAdam([p], lr=0.001)),
                 ("RowWiseAdaGrad", "RowWiseAdaGrad", {"lr": 0.01}, None)]
        print(f"apply_gradients, {b['bkeys'].shape[0]:,} keys -> {args.unique:,} rows of "
              f"{args.rows:,}, dim 16, {args.precision} rows, {args.steps} steps per rep, "
              f"{args.reps} reps; "
              f"new = this checkout, old = {args.ref}; ms/step and per-rep ratios "
              "median [min-max]")
        for name, cls, kw, topt in cases:
            if args.only and name not in args.only:
                continue
            new = build(kraken, getattr(kraken, cls)(**kw), b, args.precision)
            old = build(ref, getattr(ref, cls)(**kw), b, args.precision)
            methods = {"new": lambda t=new: t.apply_gradients(b["bkeys"], b["grads"], now=1),
                       "old": lambda t=old: t.apply_gradients(b["bkeys"], b["grads"], now=1)}
            if topt is not None and args.precision == "FP32":
                emb = torch.nn.Embedding(args.rows, 16, sparse=True)
                with torch.no_grad():
                    emb.weight.copy_(torch.from_numpy(b["init"]))
                emb(torch.from_numpy(b["pos"])).backward(torch.from_numpy(b["grads"]))
                opt = topt(emb.weight)
                methods["torch"] = opt.step
                # same start, one step each: the updated rows agree
                opt.step()
                new.apply_gradients(b["bkeys"], b["grads"], now=1)
                old.apply_gradients(b["bkeys"], b["grads"], now=1)
                u = b["keys_all"][np.unique(b["pos"])]
                want = emb.weight.detach().numpy()[np.unique(b["pos"])]
                assert np.abs(new.lookup(u) - want).max() < 1e-4, name
                assert np.abs(old.lookup(u) - want).max() < 1e-4, name
            names = list(methods)
            secs: dict[str, list[float]] = {m: [] for m in names}
            for r in range(args.reps + 1):
                k = r % len(names)
                for m in names[k:] + names[:k]:
                    s = timed(methods[m], args.steps) / args.steps
                    if r:  # the first rep warms up
                        secs[m].append(s)
            ms = {m: spread([x * 1e3 for x in v], "{:.1f}") for m, v in secs.items()}
            line = f"{name:15s} ms/step " + "  ".join(f"{m} {ms[m]}" for m in names)
            speedup = [o / n for n, o in zip(secs["new"], secs["old"])]
            line += f"  | new/old speed {spread(speedup)}x"
            if "torch" in secs:
                for m in ("new", "old"):
                    rs = [t / x for x, t in zip(secs[m], secs["torch"])]
                    line += f"  {m}/torch {spread(rs)}x"
            print(line, flush=True)
            del new, old, methods


def _passes(kraken: Any, t: Any, b: dict[str, np.ndarray]) -> dict[str, Any]:
    """The passes of ``t.apply_gradients`` on batch ``b``, each callable on its own."""
    from kraken.table import push

    keys, g = b["bkeys"], b["grads"]
    skeys, srows, mask = t._index.slots()
    a, opt = t._arena, t.config.optimizer
    n, d = g.shape
    rows = np.empty(n, dtype=np.int64)
    hw = a.high_water
    grp = push.group(skeys, srows, mask, keys, g, hw)
    return {
        "args (shape, dtype)": lambda: t._gradient_args(keys, g, 1, finite=False),
        "find": lambda: push._find(n * (d + 8), skeys, srows, mask, keys, rows),
        "chain + isfinite": lambda: push.group(skeys, srows, mask, keys, g, hw),
        "sum + step + last_seen/stamp": lambda: opt.step_groups(
            a.weights, a.state, grp.rows, g, grp.first, grp.nxt, a.last_seen, a.stamp, 1, 1),
        "total apply_gradients": lambda: t.apply_gradients(keys, g, now=1),
    }


def breakdown(args: argparse.Namespace) -> None:
    """Median ms of each pass of this checkout's apply_gradients (called one by one)."""
    import kraken

    b = make_batch(args.rows, args.unique, args.dup, 16)
    print(f"per-pass ms, median of {args.reps} calls ({b['bkeys'].shape[0]:,} keys -> "
          f"{args.unique:,} rows of {args.rows:,}, dim 16; 'chain + isfinite' is "
          "group() minus its find)")
    for name in ("SGD", "AdaGrad", "Adam", "RowWiseAdaGrad"):
        if args.only and name not in args.only:
            continue
        passes = _passes(kraken, build(kraken, getattr(kraken, name)(), b), b)
        out: dict[str, list[float]] = {p: [] for p in passes}
        for _ in range(args.reps):
            for p, fn in passes.items():
                out[p].append(timed(fn, 1) * 1e3)
        med = {p: statistics.median(v) for p, v in out.items()}
        med["chain + isfinite"] -= med["find"]  # group() runs both
        print(f"{name:15s} " + "  ".join(f"{p} {v:.2f}" for p, v in med.items()), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="main")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--unique", type=int, default=50_000)
    p.add_argument("--dup", type=int, default=4)
    p.add_argument("--only", nargs="*")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--cpu", action="store_true",
                   help="time by this thread's CPU time, not wall time (robust to co-tenants "
                        "for serial code: use with NUMBA_NUM_THREADS=1 and --threads 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--precision", default="FP32", choices=["FP32", "FP16", "BF16"],
                   help="stored weights of both tables (16-bit: no torch column)")
    args = p.parse_args()
    global CLOCK
    if args.cpu:
        CLOCK = time.thread_time
    breakdown(args) if args.breakdown else ab(args)


if __name__ == "__main__":
    main()
