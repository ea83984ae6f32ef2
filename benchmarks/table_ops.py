#!/usr/bin/env python
"""Side-by-side benchmarks of the sparse table against the usual alternatives.

Every figure is measured A-and-B in one run on one machine: the methods of a
section alternate inside each repetition (their order rotates from one repetition
to the next), and the result is the median over repetitions with its min and max.
Ratios are computed per repetition (paired), so slow drift of a shared machine
cancels out. Absolute rates are printed as context only.

Sections (``--section``, repeatable or ``all``):

lookup   ``table.lookup(keys)`` (train=False: probe + gather) of present keys vs
         ``torch.index_select`` (2 threads) and ``numpy.take`` of the same row positions
         from a dense float32 array of the same shape. Batches of 100k keys, Zipf(1.1)
         over the live keys (target) and uniform (context). Target: >= 0.7x index_select.
insert   insert-or-find, 90% present / 10% new keys per 100k batch:
         ``table.lookup(keys, train=True)`` (Always admission; also initialises new rows,
         stamps access metadata and gathers all rows) and the bare hash index
         (``kraken.table.index.HashIndex`` claim + settle: one probe per key, new keys
         numbered in first-occurrence order; internal API, labelled) vs
         pandas' ``Int64HashTable`` (two ways) and a Python dict. Targets: >= 3x pandas,
         >= 10x dict.
admit    admission of new rows: all-new keys in batches of 1M into an empty table of dim 16
         growing to 20M rows (capacity 20M + 1024, Always admission, default initializer):
         ``table.lookup(keys, train=True)`` (probe, claim, initialise weights and state,
         stamp metadata, gather the rows) vs the minimal equivalent in pandas/numpy: pandas'
         ``Int64HashTable.map_keys_to_values`` of the keys to new row numbers (growing from
         empty) and ``Generator.random(out=...)`` writing 16 float32 per new row into a
         preallocated array. Each batch is one sample (both methods take the same batch,
         the first one alternating); rows/s median [min-max] over the batches.
         Target: >= 10M rows/s.
optim    one optimizer step over 50k unique rows (each 4x in a 200k-key batch) of dim 16:
         ``table.apply_gradients`` (finds keys, sums duplicates, updates, stamps) vs the
         torch optimizer's ``step()`` on the sparse (uncoalesced) gradient of
         ``nn.Embedding(sparse=True)`` (prepared beforehand; the step's internal coalesce
         is timed). Targets: >= 5x for AdaGrad and Adam, >= 2x for SGD (torch's SGD
         step is an index-add given row positions; kraken first maps keys to rows).
memory   bytes per live row from process RSS in a fresh subprocess per (optimizer, dim),
         just after an index growth (load 0.375) and just before the next (load 0.75),
         vs the ideal (8 B key + weights + optimizer state + 8 B metadata); then one
         RowWiseAdaGrad dim-16 table filled to ``--mem-rows`` (20M): just before and just
         after its last index growth on the way, and at 20M rows.
         Targets: <= 1.3x ideal; RowWiseAdaGrad <= 0.36x Adam.
demo     wall time of ``kraken demo`` (subprocess, median of 3). Target: < 60 s.

Uses the public API (``import kraken``) plus numpy / torch / pandas / psutil; the only
internal import is ``kraken.table.index.HashIndex`` for the clearly labelled
index-only row of the insert section.

    python benchmarks/table_ops.py                      # all sections, full sizes
    python benchmarks/table_ops.py --section lookup --reps 7
    python benchmarks/table_ops.py --quick              # tiny sizes (smoke test)
    python benchmarks/table_ops.py --json results.json
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# "kraken" is this checkout's, not an installed one of another checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS = ("lookup", "insert", "admit", "optim", "memory", "demo")

# --------------------------------------------------------------------------- helpers


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser over uint64 (a bijection): distinct, random-looking keys."""
    h = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return h.view(np.int64)


def make_keys(start: int, n: int, salt: int = 0x5EED) -> np.ndarray:
    """``n`` distinct int64 keys: ``fmix64(salt << 40 | i)`` for ``i`` in ``[start, start + n)``."""
    return fmix64(np.arange(start, start + n, dtype=np.uint64) + np.uint64(salt << 40))


def zipf_ranks(rng: np.random.Generator, a: float, n: int, live: int) -> np.ndarray:
    """``n`` ranks in ``[0, live)`` drawn Zipf(a), truncated to ``live`` by rejection."""
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        r = rng.zipf(a, size=2 * (n - got) + 16)
        r = r[r <= live] - 1
        out.append(r)
        got += r.shape[0]
    return np.concatenate(out)[:n].astype(np.int64)


def positions(rng: np.random.Generator, dist: str, n: int, live: int,
              perm: np.ndarray) -> np.ndarray:
    """Row positions in ``[0, live)``: Zipf ranks scattered by ``perm``, or uniform."""
    if dist == "zipf":
        return perm[zipf_ranks(rng, 1.1, n, live)]
    return rng.integers(0, live, size=n, dtype=np.int64)


def timed(fn: Callable[[], Any], calls: int = 1) -> float:
    """Seconds for ``calls`` calls of ``fn`` (gc collected before and paused during)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def summary(xs: Sequence[float]) -> dict[str, float]:
    return {"median": float(statistics.median(xs)), "min": float(min(xs)),
            "max": float(max(xs)), "n": len(xs)}


def fmt_rate(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.1f}"


def fmt_spread(s: dict[str, float], kind: str = "rate") -> str:
    f = fmt_rate if kind == "rate" else (lambda v: f"{v:.2f}x" if kind == "ratio" else f"{v:.1f}")
    return f"{f(s['median'])} [{f(s['min'])}-{f(s['max'])}]"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    print(f"\n== {title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def run_reps(methods: dict[str, Callable[[int], float]], reps: int) -> dict[str, list[float]]:
    """Call every method once per repetition, rotating the order; each returns seconds."""
    names = list(methods)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(methods[name](r))
    return out


def paired_ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """Summary of per-repetition ratios ``num[r] / den[r]`` (rates, so higher is better)."""
    return summary([a / b for a, b in zip(num, den)])


def verdict(ratio: float, target: float, higher_better: bool = True) -> str:
    ok = ratio >= target if higher_better else ratio <= target
    if ok:
        return "met"
    miss = 100 * ((1 - ratio / target) if higher_better else (ratio / target - 1))
    return f"MISSED (by {miss:.1f}%)" if miss < 1 else f"MISSED (by {miss:.0f}%)"


def build_table(kraken: Any, keys: np.ndarray, values: np.ndarray | None, dim: int,
                capacity: int, optimizer: Any = None, batch: int = 1 << 20,
                precision: Any = None) -> Any:
    cfg = kraken.TableConfig(dim=dim, capacity=capacity,
                             optimizer=optimizer if optimizer is not None else kraken.SGD(),
                             admission=kraken.Always(),
                             precision=precision if precision is not None else
                             kraken.Precision.FP32)
    table = kraken.SparseTable(cfg)
    for i in range(0, keys.shape[0], batch):
        j = min(i + batch, keys.shape[0])
        if values is None:
            table.lookup(keys[i:j], train=True, now=0)
        else:
            table.assign(keys[i:j], values[i:j], now=0)
    return table


# --------------------------------------------------------------------------- 1. lookup


LOOKUP_TARGET = 0.7
"""kraken lookup + gather over torch.index_select (Zipf keys), the section's target."""


def _lookup_dim(args: argparse.Namespace, rng: np.random.Generator, keys: np.ndarray,
                perm: np.ndarray, dim: int, results: dict[str, Any],
                rows_out: list[list[Any]]) -> None:
    import torch

    import kraken

    live, batch, nb = args.live, args.batch, args.batches
    t0 = time.perf_counter()
    dense = rng.random((live, dim), dtype=np.float32)
    table = build_table(kraken, keys, dense, dim, capacity=live)
    build_s = time.perf_counter() - t0
    dense_t = torch.from_numpy(dense)
    for dist in ("zipf", "uniform"):
        pos = [positions(rng, dist, batch, live, perm) for _ in range(nb)]
        qkeys = [keys[p] for p in pos]
        pos_t = [torch.from_numpy(p) for p in pos]
        # same rows, same values: check once before timing
        for q, p, pt in zip(qkeys, pos, pos_t):
            a = table.lookup(q)
            assert np.array_equal(a, torch.index_select(dense_t, 0, pt).numpy())
            assert np.array_equal(a, np.take(dense, p, axis=0))

        def m_kraken(_r: int, qkeys: list[np.ndarray] = qkeys) -> float:
            return timed(lambda: [table.lookup(q) for q in qkeys])

        def m_torch(_r: int, pos_t: list[Any] = pos_t) -> float:
            return timed(lambda: [torch.index_select(dense_t, 0, p) for p in pos_t])

        def m_numpy(_r: int, pos: list[np.ndarray] = pos) -> float:
            return timed(lambda: [np.take(dense, p, axis=0) for p in pos])

        methods = {"kraken lookup": m_kraken, "torch.index_select": m_torch,
                   "numpy take": m_numpy}
        run_reps(methods, 1)  # warm-up
        secs = run_reps(methods, args.reps)
        rates = {n: [batch * nb / s for s in v] for n, v in secs.items()}
        ratio = paired_ratio(rates["kraken lookup"], rates["torch.index_select"])
        np_ratio = paired_ratio(rates["numpy take"], rates["torch.index_select"])
        results[f"dim{dim}_{dist}"] = {"rows_per_s": {n: summary(v) for n, v in rates.items()},
                                       "kraken_over_index_select": ratio,
                                       "take_over_index_select": np_ratio, "build_s": build_s}
        target = dist == "zipf"
        rows_out.append([
            dim, dist + ("" if target else " (context)"),
            fmt_spread(summary(rates["kraken lookup"])),
            fmt_spread(summary(rates["torch.index_select"])),
            fmt_spread(summary(rates["numpy take"])),
            fmt_spread(ratio, "ratio"), fmt_spread(np_ratio, "ratio"),
            verdict(ratio["median"], LOOKUP_TARGET) if target else "-"])


def section_lookup(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    rng = np.random.default_rng(1)
    keys = make_keys(0, args.live)
    perm = rng.permutation(args.live)
    results: dict[str, Any] = {"live": args.live, "batch": args.batch,
                               "batches_per_rep": args.batches}
    rows_out: list[list[Any]] = []
    for dim in args.dims:  # one table (and one dense copy) at a time
        _lookup_dim(args, rng, keys, perm, dim, results, rows_out)
        gc.collect()
    print_table(
        f"lookup of present keys + gather: {args.live:,} live keys, batches of {args.batch:,}, "
        f"{args.batches} batches per rep, {args.reps} reps; rows/s median [min-max]",
        ["dim", "keys", "kraken lookup", "torch.index_select", "numpy take",
         "kraken/index_select", "take/index_select", f"target >={LOOKUP_TARGET}x"], rows_out)
    return results


# --------------------------------------------------------------------------- 2. insert


def section_insert(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    import kraken
    from kraken.table.index import HashIndex  # internal: the index-only row

    htable = pd.core.algorithms.htable  # == pandas._libs.hashtable
    live, batch, nb, dim = args.insert_live, args.batch, args.batches, 16
    n_new = batch // 10
    rng = np.random.default_rng(2)
    keys = make_keys(0, live)
    perm = rng.permutation(live)
    t0 = time.perf_counter()
    capacity = live + (args.reps + 1) * 2 * nb * n_new + 1024
    table = build_table(kraken, keys, None, dim, capacity=capacity)
    t_kraken = time.perf_counter() - t0
    index = HashIndex()
    index.insert(keys, np.arange(live, dtype=np.int64))
    index_next = [live]
    fac = htable.Int64Factorizer(live)
    fac.factorize(keys)
    ht = htable.Int64HashTable(live)
    ht.map_locations(keys)
    ht_next = [live]
    d: dict[int, int] = dict(zip(keys.tolist(), range(live)))
    setup_s = time.perf_counter() - t0

    fresh = [live]  # next fresh-key counter

    def make_batches(dist: str) -> list[np.ndarray]:
        out = []
        for _ in range(nb):
            present = keys[positions(rng, dist, batch - n_new, live, perm)]
            new = make_keys(fresh[0], n_new, salt=0xF00D)
            fresh[0] += n_new
            b = np.concatenate([present, new])
            rng.shuffle(b)
            out.append(b)
        return out

    def op_kraken(b: np.ndarray) -> Any:
        return table.lookup(b, train=True, now=1)

    def op_index(b: np.ndarray) -> np.ndarray:
        rows, pending = index.claim(b)  # one probe per key; new keys claim their slots
        new = np.arange(index_next[0], index_next[0] + len(pending), dtype=np.int64)
        index_next[0] += len(pending)
        index.settle(pending, new)
        fresh_at = rows < -1
        rows[fresh_at] = new[-2 - rows[fresh_at]]
        return rows

    def op_factorize(b: np.ndarray) -> np.ndarray:
        return fac.factorize(b)

    def op_lookup_map(b: np.ndarray) -> np.ndarray:
        rows = ht.lookup(b)
        absent = rows < 0
        if absent.any():
            miss = b[absent]
            u = pd.unique(miss)  # first-occurrence order
            ht.map_keys_to_values(u, np.arange(ht_next[0], ht_next[0] + u.shape[0]))
            ht_next[0] += u.shape[0]
            rows[absent] = ht.lookup(miss)
        return rows

    def op_dict(b: np.ndarray) -> np.ndarray:
        sd = d.setdefault
        return np.array([sd(k, len(d)) for k in b.tolist()], dtype=np.int64)

    ops = {"kraken lookup(train=True)": op_kraken,
           "kraken HashIndex claim+settle (internal)": op_index,
           "pandas Int64Factorizer.factorize": op_factorize,
           "pandas Int64HashTable lookup+map_keys_to_values": op_lookup_map,
           "python dict.setdefault loop": op_dict}
    results: dict[str, Any] = {"live": live, "batch": batch, "new_fraction": 0.1, "dim": dim,
                               "batches_per_rep": nb, "setup_s": setup_s,
                               "kraken_build_s": t_kraken}
    rows_out = []
    for dist in ("zipf", "uniform"):
        sets = [make_batches(dist) for _ in range(args.reps + 1)]
        # all structures see the same batches in the same order: ids must agree
        ids = [op(sets[0][0]) for op in ops.values()][1:]  # [0] returns rows, not ids
        for other in ids[1:]:
            assert np.array_equal(ids[0], other), "insert-or-find ids disagree"
        for b in sets[0][1:]:
            for op in ops.values():
                op(b)
        assert np.array_equal(table.contains(sets[0][-1]), np.ones(batch, dtype=bool))

        def method(op: Callable[[np.ndarray], Any],
                   sets: list[list[np.ndarray]] = sets) -> Callable[[int], float]:
            return lambda r: timed(lambda: [op(b) for b in sets[r + 1]])

        secs = run_reps({n: method(op) for n, op in ops.items()}, args.reps)
        rates = {n: [batch * nb / s for s in v] for n, v in secs.items()}
        pandas_best = [max(a, b) for a, b in zip(
            rates["pandas Int64Factorizer.factorize"],
            rates["pandas Int64HashTable lookup+map_keys_to_values"])]
        dict_rate = rates["python dict.setdefault loop"]
        res = {"keys_per_s": {n: summary(v) for n, v in rates.items()}, "ratios": {}}
        for n in ("kraken lookup(train=True)", "kraken HashIndex claim+settle (internal)"):
            rp = paired_ratio(rates[n], pandas_best)
            rd = paired_ratio(rates[n], dict_rate)
            res["ratios"][n] = {"over_pandas_best": rp, "over_dict": rd}
        results[dist] = res
        for n in ops:
            is_k = n.startswith("kraken")
            rp = paired_ratio(rates[n], pandas_best)
            rd = paired_ratio(rates[n], dict_rate)
            rows_out.append([
                dist, n, fmt_spread(summary(rates[n])),
                fmt_spread(rp, "ratio"), fmt_spread(rd, "ratio"),
                (verdict(rp["median"], 3.0) + " / " + verdict(rd["median"], 10.0))
                if is_k else "-"])
    print_table(
        f"insert-or-find, 90% present / 10% new: {live:,} live keys, batches of {batch:,}, "
        f"{nb} batches per rep, {args.reps} reps; keys/s median [min-max]; "
        "pandas = faster of its two variants per rep",
        ["keys", "method", "keys/s", "x pandas", "x dict", "target >=3x pandas / >=10x dict"],
        rows_out)
    return results


# --------------------------------------------------------------------------- 2b. admit


def section_admit(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    import kraken

    htable = pd.core.algorithms.htable
    total, batch, dim = args.admit_rows, args.admit_batch, 16
    nb = total // batch
    table = kraken.SparseTable(kraken.TableConfig(dim=dim, capacity=nb * batch + 1024,
                                                  admission=kraken.Always()))
    ht = htable.Int64HashTable()
    weights = np.empty((nb * batch, dim), dtype=np.float32)
    gen = np.random.default_rng(4)
    warm = make_keys(0, 1000, salt=0xA11)  # load kernels in both (not timed, not counted)
    kraken.SparseTable(kraken.TableConfig(dim=dim, capacity=2048)).lookup(warm, train=True)
    htable.Int64HashTable().map_keys_to_values(warm, np.arange(1000, dtype=np.int64))

    kernel: dict[str, list[float]] = {"system_ms": [], "minor_faults": []}

    def m_kraken(i: int, keys: np.ndarray) -> float:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = timed(lambda: table.lookup(keys, train=True, now=i))
        r1 = resource.getrusage(resource.RUSAGE_SELF)  # kernel time: mostly page faults
        kernel["system_ms"].append(1e3 * (r1.ru_stime - r0.ru_stime))
        kernel["minor_faults"].append(float(r1.ru_minflt - r0.ru_minflt))
        return t

    def m_pandas(i: int, keys: np.ndarray) -> float:
        def run() -> None:
            ht.map_keys_to_values(keys, np.arange(i * batch, (i + 1) * batch, dtype=np.int64))
            gen.random(out=weights[i * batch:(i + 1) * batch], dtype=np.float32)
        return timed(run)

    methods = {"kraken lookup(train=True)": m_kraken,
               "pandas Int64HashTable + numpy random rows": m_pandas}
    names = list(methods)
    secs: dict[str, list[float]] = {n: [] for n in names}
    for i in range(nb):
        keys = make_keys(i * batch, batch, salt=0xAD)
        for name in (names if i % 2 == 0 else names[::-1]):
            secs[name].append(methods[name](i, keys))
    assert len(table) == nb * batch and len(ht) == nb * batch
    probe = make_keys(0, nb * batch, salt=0xAD)[:: max(1, nb * batch // 10_000)]
    assert table.contains(probe).all() and (ht.lookup(probe) >= 0).all()
    rates = {n: [batch / s for s in v] for n, v in secs.items()}
    ratio = paired_ratio(rates[names[0]], rates[names[1]])
    k = summary(rates[names[0]])
    results: dict[str, Any] = {"rows": nb * batch, "batch": batch, "dim": dim, "batches": nb,
                               "rows_per_s": {n: summary(v) for n, v in rates.items()},
                               "kraken_over_pandas": ratio,
                               "index_slots": table.stats().index_slots,
                               "kraken_kernel_per_batch": {n: summary(v)
                                                           for n, v in kernel.items()}}
    print_table(
        f"admission of all-new keys: {nb} batches of {batch:,} into an empty table of dim "
        f"{dim} growing to {nb * batch:,} rows; rows/s per batch, median [min-max]",
        ["method", "rows/s", "kraken/pandas", "target >=10M rows/s"],
        [[names[0], fmt_spread(k), fmt_spread(ratio, "ratio"), verdict(k["median"], 10e6)],
         [names[1], fmt_spread(summary(rates[names[1]])), "-", "-"]])
    print("kraken's kernel (system) time per batch, ms (page faults, mostly): "
          f"{fmt_spread(summary(kernel['system_ms']), 'num')}; minor page faults per batch: "
          f"{fmt_spread(summary(kernel['minor_faults']), 'num')}")
    methods.clear()  # the closures hold the table, the pandas table and the rows
    gc.collect()
    return results


# --------------------------------------------------------------------------- 3. optim


_OPTIM_TARGET = {"SGD": 2.0, "AdaGrad": 5.0, "Adam": 5.0}
"""apply_gradients / torch optimizer step, unique rows per second."""


def section_optim(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import kraken

    torch.set_num_threads(2)
    n_rows, n_uniq, dup, dim, steps = (args.optim_rows, args.optim_unique, args.optim_dup, 16,
                                       args.optim_steps)
    rng = np.random.default_rng(3)
    keys_all = make_keys(0, n_rows)
    uniq = rng.choice(n_rows, size=n_uniq, replace=False)
    pos = np.repeat(uniq, dup)
    rng.shuffle(pos)
    n = pos.shape[0]
    grads = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(0.1)
    init = (rng.random((n_rows, dim), dtype=np.float32) - 0.5) * np.float32(0.1)
    bkeys = keys_all[pos]

    pairs: list[tuple[str, Any, Callable[[Any], Any] | None, bool]] = [
        ("SGD", kraken.SGD(lr=0.01), lambda p: torch.optim.SGD([p], lr=0.01), True),
        ("AdaGrad", kraken.AdaGrad(lr=0.01),
         lambda p: torch.optim.Adagrad([p], lr=0.01, eps=1e-10), True),
        ("Adam", kraken.Adam(lr=0.001), lambda p: torch.optim.SparseAdam([p], lr=0.001), True),
        ("RowWiseAdaGrad", kraken.RowWiseAdaGrad(lr=0.01), None, False),
        ("RowWiseAdaGrad fp16", kraken.RowWiseAdaGrad(lr=0.01), None, False),
        ("RowWiseAdaGrad bf16", kraken.RowWiseAdaGrad(lr=0.01), None, False),
        ("AdaGrad fp16", kraken.AdaGrad(lr=0.01), None, False),
        ("RAdaGrad", kraken.RAdaGrad(lr=0.01), None, False),
        ("FTRL", kraken.FTRL(), None, False),
    ]
    torch_names = {"SGD": "torch.optim.SGD", "AdaGrad": "torch.optim.Adagrad",
                   "Adam": "torch.optim.SparseAdam"}
    methods: dict[str, Callable[[int], float]] = {}
    keep: list[Any] = []
    results: dict[str, Any] = {"rows": n_rows, "unique_rows": n_uniq, "keys_per_batch": n,
                               "dim": dim, "steps_per_rep": steps, "check_max_abs_diff": {}}
    for name, kopt, topt, _ in pairs:
        precision = {"fp16": kraken.Precision.FP16, "bf16": kraken.Precision.BF16}.get(
            name.rsplit(" ", 1)[-1], kraken.Precision.FP32)  # 16-bit rows: context rows
        table = build_table(kraken, keys_all, init, dim, capacity=n_rows, optimizer=kopt,
                            precision=precision)
        keep.append(table)
        methods[f"kraken {name}"] = (lambda t: lambda r: timed(
            lambda: [t.apply_gradients(bkeys, grads, now=r + 1) for _ in range(steps)]))(table)
        if topt is None:
            continue
        emb = torch.nn.Embedding(n_rows, dim, sparse=True)
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(init))
        emb(torch.from_numpy(pos)).backward(torch.from_numpy(grads))
        g = emb.weight.grad
        assert g.is_sparse and not g.is_coalesced()
        opt = topt(emb.weight)
        # one step each from the same start: the updated rows must agree
        opt.step()
        assert emb.weight.grad is g and not g.is_coalesced()
        table.apply_gradients(bkeys, grads, now=0)
        got = table.lookup(keys_all[uniq])
        want = emb.weight.detach().numpy()[uniq]
        diff = float(np.abs(got - want).max())
        results["check_max_abs_diff"][name] = diff
        assert diff < 1e-4, f"{name}: kraken and torch disagree by {diff}"
        keep.append((emb, opt))
        methods[torch_names[name]] = (lambda o: lambda r: timed(
            lambda: [o.step() for _ in range(steps)]))(opt)
    run_reps(methods, 1)  # warm-up
    secs = run_reps(methods, args.reps)
    rates = {m: [n_uniq * steps / s for s in v] for m, v in secs.items()}
    results["unique_rows_per_s"] = {m: summary(v) for m, v in rates.items()}
    results["ratios"] = {}
    rows_out = []
    for name, _, topt, _ in pairs:
        k = rates[f"kraken {name}"]
        ms_per_step = summary([s / steps * 1e3 for s in secs[f"kraken {name}"]])
        if topt is not None:
            t = rates[torch_names[name]]
            ratio = paired_ratio(k, t)
            results["ratios"][name] = ratio
            rows_out.append([name, fmt_spread(summary(k)), fmt_spread(ms_per_step, "num"),
                             torch_names[name], fmt_spread(summary(t)),
                             fmt_spread(ratio, "ratio"), f">={_OPTIM_TARGET[name]:g}x: "
                             + verdict(ratio["median"], _OPTIM_TARGET[name])])
        else:
            rows_out.append([name, fmt_spread(summary(k)), fmt_spread(ms_per_step, "num"),
                             "-", "-", "-", "context"])
    print_table(
        f"apply_gradients: {n:,} keys = {n_uniq:,} unique rows x {dup} of {n_rows:,}, dim {dim}, "
        f"{steps} steps per rep, {args.reps} reps; unique rows/s median [min-max]",
        ["optimizer", "kraken rows/s", "kraken ms/step", "torch", "torch rows/s",
         "kraken/torch", "target"], rows_out)
    del keep
    gc.collect()
    return results


# --------------------------------------------------------------------------- 4. memory

_OPTIMIZERS = ("SGD", "RowWiseAdaGrad", "RAdaGrad", "AdaGrad", "FTRL", "Adam")


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_rss() -> int:
    """Peak RSS of this process so far (``VmHWM``), bytes; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_child(opt_name: str, dim: int, levels: list[int], capacity: int) -> None:
    """Runs in a fresh process: RSS per live row at each fill level, as one JSON line.

    The table is filled by ``lookup(train=True)`` in batches of 2**18 keys that end exactly
    at each level, so a level of ``0.75 * slots`` is just before a growth and one more key
    is just after it."""
    import kraken

    opt = getattr(kraken, opt_name)()
    keys = make_keys(0, max(levels))
    # warm up: load the compiled kernels and start the thread pool
    warm = build_table(kraken, make_keys(0, 5000, salt=7), None, dim, 8192, opt, batch=1000)
    warm.lookup(keys[:10])
    del warm
    _trim()
    base_raw = _rss()
    table = kraken.SparseTable(kraken.TableConfig(dim=dim, capacity=capacity, optimizer=opt))
    _trim()
    base = _rss()
    out = {"optimizer": opt_name, "dim": dim, "state_width": table.config.state_width,
           "empty_table_bytes": base - base_raw, "levels": []}
    done, step = 0, 1 << 18
    for n in levels:
        while done < n:
            j = min(done + step, n)
            table.lookup(keys[done:j], train=True, now=0)
            done = j
        raw = _rss()
        _trim()
        rss = _rss()
        st = table.stats()
        out["levels"].append({"live": n, "index_slots": st.index_slots,
                              "load": n / st.index_slots,
                              "rss_bytes_per_row": (rss - base) / n,
                              "rss_untrimmed_bytes_per_row": (raw - base) / n,
                              "peak_rss_bytes_per_row": (_peak_rss() - base) / n,
                              "stats_bytes_per_row": st.memory_bytes / n})
    print(json.dumps(out))


def _run_child(opt: str, dim: int, levels: list[int], capacity: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child",
           ",".join(str(x) for x in [opt, dim, capacity] + levels)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"memory child {opt} dim {dim} failed:\n{p.stderr}")
    res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    res["ideal_bytes_per_row"] = ideal = 8 + 4 * dim + 4 * res["state_width"] + 8
    for lv in res["levels"]:
        lv["ratio_to_ideal"] = lv["rss_bytes_per_row"] / ideal
    return res


def _memory_rows(res: dict[str, Any], names: list[str]) -> list[list[Any]]:
    out = []
    for lv, name in zip(res["levels"], names):
        out.append([res["dim"], res["optimizer"], res["state_width"], name, f"{lv['live']:,}",
                    f"{lv['load']:.3f}", f"{lv['rss_bytes_per_row']:.1f}",
                    f"{lv['rss_untrimmed_bytes_per_row']:.1f}",
                    f"{lv['peak_rss_bytes_per_row']:.1f}", f"{lv['stats_bytes_per_row']:.1f}",
                    res["ideal_bytes_per_row"], f"{lv['ratio_to_ideal']:.2f}x",
                    verdict(lv["ratio_to_ideal"], 1.3, higher_better=False)])
    return out


_MEM_HEADER = ["dim", "optimizer", "state", "level", "live rows", "load", "RSS B/row",
               "untrimmed", "peak", "stats() B/row", "ideal", "RSS/ideal", "target <=1.3x"]


def large_levels(rows: int) -> list[int]:
    """Just before and just after the last index growth below ``rows`` (index of 2**k
    slots grows when live passes ``0.75 * 2**k``), then ``rows`` itself."""
    slots = 1024
    while 0.75 * slots * 2 < rows:
        slots *= 2
    before = int(0.75 * slots)
    return [before, before + 1, rows] if before + 1 < rows else [rows]


def section_memory(args: argparse.Namespace) -> dict[str, Any]:
    slots = 1 << args.mem_log2_slots
    # with batched inserts the index doubles to `slots` when live passes 0.75 * slots / 2
    levels = [int(0.75 * slots / 2) + 1, int(0.75 * slots)]
    capacity = levels[-1] + 1024
    results: dict[str, Any] = {"levels": levels, "configs": []}
    rows_out = []
    by = {}
    for dim in args.dims:
        for opt in args.mem_optimizers:
            res = _run_child(opt, dim, levels, capacity)
            results["configs"].append(res)
            for lv in res["levels"]:
                by[(opt, dim, lv["live"])] = lv["rss_bytes_per_row"]
            rows_out += _memory_rows(res, ["after growth", "before growth"])
    print_table(
        f"bytes per live row (RSS delta in a fresh process per optimizer and dim; "
        f"index of {slots:,} slots at load 0.375 and 0.75); "
        "ideal = 8 key + 4*dim + 4*state + 8 metadata; peak = highest RSS so far",
        _MEM_HEADER, rows_out)
    big = large_levels(args.mem_rows)
    res = _run_child("RowWiseAdaGrad", 16, big, args.mem_rows + 1024)
    results["large"] = res
    names = ["before growth", "after growth", "final"][-len(big):]
    print_table(f"bytes per live row up to {args.mem_rows:,} rows, RowWiseAdaGrad dim 16 "
                "(one fresh process)", _MEM_HEADER, _memory_rows(res, names))
    rows2 = []
    results["rowwise_over_adam"] = []
    for dim in args.dims:
        for n in levels:
            r = by[("RowWiseAdaGrad", dim, n)] / by[("Adam", dim, n)]
            ideal_r = (16 + 4 * dim + 4) / (16 + 4 * dim + 4 * (2 * dim + 1))
            results["rowwise_over_adam"].append({"dim": dim, "live": n, "ratio": r,
                                                 "ideal_ratio": ideal_r})
            rows2.append([dim, f"{n:,}", f"{r:.3f}x", f"{ideal_r:.3f}x",
                          verdict(r, 0.36, higher_better=False)])
    print_table("RowWiseAdaGrad bytes / Adam bytes (RSS)",
                ["dim", "live rows", "measured", "ideal rows", "target <=0.36x"], rows2)
    return results


# --------------------------------------------------------------------------- 5. demo


def section_demo(args: argparse.Namespace) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "kraken"
    cmd = [str(exe), "demo"] if exe.exists() else [sys.executable, "-m", "kraken.cli.main", "demo"]
    if args.quick:  # a short run (an unknown flag is an argparse error: exit 2, rerun without)
        cmd += ["--samples", "20000"]
    times, error = [], None
    for _ in range(args.demo_reps):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode == 2 and args.quick and "--samples" in cmd:
            cmd = cmd[:-2]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            error = f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-1500:]}"
            break
    shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
    if error:
        print(f"\n== `{shown}` wall time: FAILED\n{error}")
        return {"command": shown, "error": error}
    s = summary(times)
    print_table(f"`{shown}` wall time, {args.demo_reps} runs",
                ["median s", "min s", "max s", "target < 60 s"],
                [[f"{s['median']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}",
                  verdict(60.0 / s["median"], 1.0)]])
    return {"command": shown, "seconds": s}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", action="append", choices=SECTIONS + ("all",),
                   help="section(s) to run (repeatable; default all)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per method (default 5)")
    p.add_argument("--live", type=int, default=10_000_000,
                   help="live keys of the lookup table (default 10M)")
    p.add_argument("--insert-live", type=int, default=None,
                   help="live keys before the insert section (default --live)")
    p.add_argument("--batch", type=int, default=100_000, help="keys per batch (default 100k)")
    p.add_argument("--batches", type=int, default=5,
                   help="batches per method per repetition (default 5)")
    p.add_argument("--dims", type=int, nargs="+", default=[16, 64])
    p.add_argument("--admit-rows", type=int, default=20_000_000,
                   help="rows the admit section's table grows to (default 20M)")
    p.add_argument("--admit-batch", type=int, default=1_000_000,
                   help="new keys per admit batch (default 1M)")
    p.add_argument("--optim-rows", type=int, default=1_000_000)
    p.add_argument("--optim-unique", type=int, default=50_000)
    p.add_argument("--optim-dup", type=int, default=4, help="occurrences of each unique row")
    p.add_argument("--optim-steps", type=int, default=5, help="steps per method per rep")
    p.add_argument("--mem-log2-slots", type=int, default=22,
                   help="measure memory at index loads 0.375 and 0.75 of 2**N slots (default 22)")
    p.add_argument("--mem-rows", type=int, default=20_000_000,
                   help="memory of one RowWiseAdaGrad dim-16 table filled to N rows, and just "
                        "before and after its last index growth on the way (default 20M)")
    p.add_argument("--demo-reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    p.add_argument("--json", type=str, default=None, help="also write results to this file")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.mem_optimizers = list(_OPTIMIZERS)
    if args.quick:
        args.live, args.batch, args.batches, args.reps = 50_000, 5_000, 2, min(args.reps, 2)
        args.insert_live, args.dims = 50_000, [16]
        args.admit_rows, args.admit_batch = 100_000, 50_000  # 2 batches: n == reps
        args.optim_rows, args.optim_unique, args.optim_steps = 20_000, 2_000, 2
        args.mem_log2_slots, args.demo_reps, args.mem_rows = 14, 1, 60_000
        args.mem_optimizers = ["RowWiseAdaGrad", "Adam"]
    if args.insert_live is None:
        args.insert_live = args.live
    secs = args.section or ["all"]
    args.sections = list(SECTIONS) if "all" in secs else list(dict.fromkeys(secs))
    return args


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "missing"


def _git_state() -> str:
    """HEAD plus the files that differ from it (the code measured)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        opt, dim, cap, *levels = args.memory_child.split(",")
        memory_child(opt, int(dim), [int(x) for x in levels], int(cap))
        return 0
    import torch

    import kraken

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "kraken": kraken.__version__, "numpy": np.__version__,
            "torch": torch.__version__, "numba": _version("numba"),
            "pandas": _version("pandas"), "git": _git_state()}
    print(f"kraken {meta['kraken']} | numpy {meta['numpy']} | torch {meta['torch']} | "
          f"numba {meta['numba']} | pandas {meta['pandas']} | "
          f"python {meta['python']} | {meta['cpus']} CPUs | {meta['date']}")
    print(f"git {meta['git']}")
    print(f"sections {args.sections}, {args.reps} reps; medians [min-max]; ratios are paired "
          "per repetition (methods alternate, order rotates)")
    fns = {"lookup": section_lookup, "insert": section_insert, "admit": section_admit,
           "optim": section_optim,
           "memory": section_memory, "demo": section_demo}
    results: dict[str, Any] = {"meta": meta}
    gc.collect()
    gc.freeze()  # import-time objects: keep them out of the collections in timed()
    for s in args.sections:
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        results[s] = fns[s](args)
        results[s]["section_wall_s"] = time.perf_counter() - t0
        results[s]["loadavg_1min"] = [load0, os.getloadavg()[0]]
        print(f"[{s}: {results[s]['section_wall_s']:.0f} s; 1-min load average "
              f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end (2 CPUs)]")
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    failed = [s for s in args.sections if "error" in results[s]]
    if failed:
        print(f"FAILED sections: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
