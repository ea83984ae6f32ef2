#!/usr/bin/env python
"""End-to-end CTR training throughput and peak memory, Kraken against PyTorch and TorchRec.

Same model, same data, same machine, side by side: a DLRM (bottom MLP 13-64-16, dot
interactions, top MLP 512-256-1) on a synthetic Criteo-like stream (13 dense features,
26 categorical fields each drawn Zipf(1.05) from 1M IDs, dim 16, batch 4096, fresh batches
every step). Variants, each in a fresh subprocess so peak RSS is its own:

  kraken        Kraken trainer: one shared collisionless table, row-wise AdaGrad on the PS,
                count-min admission (threshold 2), LRU eviction under a row budget, Adam dense
  kraken-pipelined  the same with TrainerConfig(pipeline=True): the next batch's rows are
                pulled in the background while the current batch computes
  kraken-bgpush the same with LocalPS(background_push=True): each push is applied on a
                background thread while the dense optimizer step runs (same results)
  kraken-remoteS-kK  the same table on S `kraken ps` shard processes over gRPC on loopback
                (budget split among them), pushes trailing pulls by at most K batches;
                shards compete with the trainer for this machine's cores, and their memory
                is not in the trainer's peak RSS
  sparseadam    26 x nn.EmbeddingBag(1M, 16, sparse=True) + torch.optim.SparseAdam, Adam dense
  adagrad       the same tables + torch.optim.Adagrad (sparse gradients), Adam dense
  torchrec      TorchRec FusedEmbeddingBagCollection (fbgemm CPU, fused row-wise AdaGrad)
  dense         the dense part alone on fixed embeddings (the ceiling; no lookups)

Variants alternate within each repetition (order rotated), and the figures are medians over
repetitions with min and max; ratios are paired per repetition.

    python benchmarks/train_throughput.py --reps 5
    python benchmarks/train_throughput.py --quick          # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

# "kraken" is this checkout's, not an installed one of another checkout
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_DENSE, N_FIELDS, DIM = 13, 26, 16
PIPELINE = False
BACKGROUND_PUSH = False


def make_batches(n_batches: int, batch: int, vocab: int, seed: int) -> list[dict[str, Any]]:
    """Pre-generated batches: ``ids int64[B, 26]`` (per-field IDs in [0, vocab)), dense, label."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.05)
    cdf /= cdf[-1]
    perms = [rng.permutation(vocab) for _ in range(N_FIELDS)]
    out = []
    for _ in range(n_batches):
        u = rng.random((batch, N_FIELDS))
        r = np.minimum(np.searchsorted(cdf, u), vocab - 1)
        ids = np.stack([perms[f][r[:, f]] for f in range(N_FIELDS)], axis=1).astype(np.int64)
        dense = rng.standard_normal((batch, N_DENSE)).astype(np.float32)
        logit = (ids[:, 0] % 7 - 3) * 0.3 + dense[:, 0]
        label = (rng.random(batch) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        out.append({"ids": ids, "dense": dense, "label": label})
    return out


def build_dense_model() -> Any:
    import torch

    from kraken.nn.models import ModelShape, build_model

    torch.manual_seed(0)
    return build_model("dlrm", ModelShape(n_fields=N_FIELDS, dim=DIM, n_dense=N_DENSE),
                       bottom=(64, DIM), top=(512, 256))


class _ListStream:
    """The pre-generated batches as a kraken Stream (field-namespaced keys)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        from kraken.data import Batch, Schema
        from kraken.table import field_keys

        self.schema = Schema(fields=tuple(f"C{i}" for i in range(N_FIELDS)),
                             dense=tuple(f"I{i}" for i in range(N_DENSE)))
        self._batches = []
        offset = 0
        for i, b in enumerate(batches):
            keys = np.stack([field_keys(f, b["ids"][:, f]) for f in range(N_FIELDS)], axis=1)
            offset += len(b["label"])
            self._batches.append(Batch(keys=keys, dense=b["dense"], label=b["label"],
                                       event_time=np.full(len(b["label"]), i, np.int64),
                                       offset=offset))

    @property
    def skipped(self) -> int:
        return 0

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Any]:
        yield from (b for b in self._batches if b.offset > start)


def run_kraken(batches: list[dict[str, Any]], warmup: int, capacity: int, shards: int = 0,
               staleness: int = 0, profiler: Any = None) -> float:
    """Train on ``batches``; ``shards`` > 0 puts the table on that many shard processes.

    ``profiler`` (a ``cProfile.Profile``) is enabled for the steps after warm-up."""
    import tempfile

    from kraken.nn import EmbeddingLayer
    from kraken.optim import RowWiseAdaGrad
    from kraken.ps import LocalPS, Router, ShardedPS
    from kraken.table import LRU, CountMin, TableConfig
    from kraken.train import Trainer, TrainerConfig

    tables = {"emb": TableConfig(dim=DIM, capacity=capacity, optimizer=RowWiseAdaGrad(lr=0.05),
                                 admission=CountMin(threshold=2), eviction=LRU(0.95, 0.85))}
    procs = None
    if shards:
        from kraken.ps.client import RemoteShard
        from kraken.ps.processes import ShardProcesses

        cfg = os.path.join(tempfile.mkdtemp(), "run.json")
        with open(cfg, "w") as f:
            json.dump({"model": {"name": "dlrm"},
                       "tables": {n: c.to_dict() for n, c in tables.items()},
                       "ps": {"evict_every": 5}}, f)
        procs = ShardProcesses(cfg, shards)
        ps = ShardedPS([RemoteShard(a, index=i) for i, a in enumerate(procs.addresses)],
                       Router.uniform(shards), push_staleness=staleness)
    else:
        ps = LocalPS(tables, evict_every=5, background_push=BACKGROUND_PUSH)
    model = build_dense_model()
    stream = _ListStream(batches)
    emb = EmbeddingLayer(ps, stream.schema)
    bs = len(batches[0]["label"])
    times: list[float] = []
    push = ps.push

    def timed_push(*args: Any, **kwargs: Any) -> Any:
        # One timestamp per step, taken when its row push is handed to the PS (the
        # trainer calls push once a step): records keep their default cadence.
        out = push(*args, **kwargs)
        times.append(time.perf_counter())
        if profiler is not None and len(times) == warmup + 1:
            profiler.enable()
        if profiler is not None and len(times) == len(batches):
            profiler.disable()
        return out

    ps.push = timed_push  # type: ignore[method-assign]
    cfg = TrainerConfig(batch_size=bs, dense_lr=1e-3, window=10**12, pipeline=PIPELINE)
    tr = Trainer(model=model, embedding=emb, ps=ps, stream=stream, config=cfg)
    try:
        tr.run()
        run_kraken.stats = ps.stats()["emb"]  # type: ignore[attr-defined]
    finally:
        ps.close()
        if procs is not None:
            procs.stop()
    # one push per batch: time the batches after warm-up
    steady = times[warmup:len(batches)]
    return (len(steady) - 1) * bs / (steady[-1] - steady[0])


def run_torch(batches: list[dict[str, Any]], warmup: int, vocab: int, kind: str) -> float:
    import torch
    from torch import nn

    from kraken.nn.inputs import ModelInputs

    torch.manual_seed(0)
    model = build_dense_model()
    bs = len(batches[0]["label"])
    loss_fn = nn.BCEWithLogitsLoss()
    dense_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if kind == "dense":
        fixed = torch.randn(bs, N_FIELDS, DIM) * 0.01

        def embed(ids: torch.Tensor) -> torch.Tensor:
            return fixed

        sparse_opt = None
    elif kind == "torchrec":
        from torchrec.modules.embedding_configs import EmbeddingBagConfig
        from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
        from torchrec.optim import RowWiseAdagrad
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        names = [f"f{i}" for i in range(N_FIELDS)]
        ebc = FusedEmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=f"t{i}", embedding_dim=DIM, num_embeddings=vocab,
                                       feature_names=[names[i]]) for i in range(N_FIELDS)],
            optimizer_type=RowWiseAdagrad, optimizer_kwargs={"lr": 0.05},
            device=torch.device("cpu"))
        lengths = torch.ones(N_FIELDS * bs, dtype=torch.int32)

        def embed(ids: torch.Tensor) -> torch.Tensor:
            kjt = KeyedJaggedTensor.from_lengths_sync(keys=names, values=ids.t().reshape(-1),
                                                      lengths=lengths)
            return ebc(kjt).values().view(bs, N_FIELDS, DIM)

        sparse_opt = None
    else:
        tables = nn.ModuleList(nn.EmbeddingBag(vocab, DIM, mode="sum", sparse=True)
                               for _ in range(N_FIELDS))
        offsets = torch.arange(bs)

        def embed(ids: torch.Tensor) -> torch.Tensor:
            return torch.stack([t(ids[:, f].contiguous(), offsets)
                                for f, t in enumerate(tables)], dim=1)

        params = list(tables.parameters())
        sparse_opt = (torch.optim.SparseAdam(params, lr=1e-3) if kind == "sparseadam"
                      else torch.optim.Adagrad(params, lr=0.05))
    stamps = []
    for b in batches:
        ids = torch.from_numpy(b["ids"])
        inputs = ModelInputs(emb=embed(ids), dense=torch.from_numpy(b["dense"]))
        loss = loss_fn(model(inputs), torch.from_numpy(b["label"]))
        dense_opt.zero_grad(set_to_none=True)
        if sparse_opt is not None:
            sparse_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()
        if sparse_opt is not None:
            sparse_opt.step()
        stamps.append(time.perf_counter())
    steady = stamps[warmup:]
    return (len(steady) - 1) * bs / (steady[-1] - steady[0])


# Where one Kraken step's milliseconds go: (label, depth, [(file suffix, function, caller)])
# Each row is the inclusive time of the listed functions (file: a part of the path; caller:
# only when called from that function); a parent's "rest" is its time minus its children's.
_PROFILE_ROWS: list[tuple[str, int, list[tuple[str, str, str | None]]]] = [
    ("pull (PS, train=True)", 0, [("ps/sharded.py", "pull", None)]),
    ("index probe (find or claim, settle)", 1, [("table/index.py", "find", "lookup"),
                                                 ("table/index.py", "find", "_pull"),
                                                 ("table/index.py", "claim", "_pull"),
                                                 ("table/index.py", "settle", "_pull")]),
    ("admission + new rows", 1, [("table/table.py", "_admit", None)]),
    ("gather", 1, [("table/table.py", "_gather", None), ("kraken/_jit.py", "dispatch", "_pull")]),
    ("embedding forward (pool, torch)", 0, [("nn/layout.py", "inputs", None)]),
    ("dense forward (DLRM)", 0, [("models/dlrm.py", "forward", None)]),
    ("loss", 0, [("torch/nn/modules/loss.py", "forward", None)]),
    ("backward", 0, [("torch/_tensor.py", "backward", None)]),
    ("finiteness check", 0, [("train/trainer.py", "_grads_finite", None)]),
    ("dense optimizer (Adam, zero_grad)", 0, [("torch/optim/adam.py", "step", None),
                                              ("torch/optim/optimizer.py", "zero_grad", None)]),
    ("progressive metrics update", 0, [("train/progressive.py", "update", None)]),
    ("push (PS)", 0, [("nn/embedding.py", "push", None)]),
    ("index probe, grouping", 1, [("table/index.py", "find", "apply_gradients"),
                                   ("table/push.py", "group", "apply_gradients")]),
    ("optimizer step + last_seen/stamp (row-wise AdaGrad)", 1, [
        ("kraken/optim/", "update", "apply_gradients"),
        ("kraken/optim/", "update_groups", "apply_gradients"),
        ("kraken/optim/", "step_groups", "apply_gradients"),
        ("table/rows16.py", "read", "apply_gradients"),
        ("table/rows16.py", "write", "apply_gradients")]),
    ("stamp", 1, [("table/table.py", "_stamp", "apply_gradients")]),
    ("eviction", 1, [("ps/shard.py", "evict", None)]),
    ("records", 0, [("train/trainer.py", "_record", None)]),
    ("PS stats()", 1, [("ps/sharded.py", "stats", None)]),
    ("peak RSS", 1, [("train/trainer.py", "_rss_mb", None)]),
    ("metrics get()", 1, [("metrics/metric_set.py", "get", None)]),
    ("waiting for the prefetch thread", 0, [("/queue.py", "get", None)]),
]


def profile_table(prof: Any, steps: int, step_ms: float) -> str:
    """A markdown table of ``_PROFILE_ROWS`` in ms per step from a ``cProfile.Profile``."""
    import pstats

    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def ms(matchers: list[tuple[str, str, str | None]]) -> float:
        total = 0.0
        for (path, _, name), (_, _, _, ct, callers) in st.items():
            for suffix, fn, caller in matchers:
                if name != fn or suffix not in path.replace("\\", "/"):
                    continue
                if caller is None:
                    total += ct
                else:
                    total += sum(v[3] for c, v in callers.items() if c[2] == caller)
        return 1e3 * total / steps

    lines = ["| part of the step | ms/step | share |", "|---|---:|---:|"]
    top = 0.0
    parent: list[Any] = [None, 0.0]
    rows = []
    for label, depth, matchers in _PROFILE_ROWS:
        v = ms(matchers)
        if depth == 0:
            if parent[0] is not None and parent[1] > 0:
                rows.append((parent[0], 1, parent[2]))
            top += v
            parent = [f"rest of {label.split(' (')[0]}", 0.0, v]
        else:
            parent[1] += 1
            parent[2] -= v
        rows.append((label, depth, v))
    if parent[1] > 0:
        rows.append((parent[0], 1, parent[2]))
    rows.append(("trainer loop, Python and the rest", 0, step_ms - top))
    for label, depth, v in rows:
        name = ("&nbsp;&nbsp;&nbsp;&nbsp;" * depth) + label
        lines.append(f"| {name} | {v:.1f} | {100 * v / step_ms:.0f}% |")
    lines.append(f"| **step (wall, profiled)** | **{step_ms:.1f}** | 100% |")
    return "\n".join(lines)


def child(args: argparse.Namespace) -> None:
    # kraken first, as the kraken command does: its OpenMP spin setting (kraken/_jit.py)
    # then reaches torch's runtime too, in every variant alike
    import kraken  # noqa: F401, I001
    import torch

    torch.set_num_threads(2)
    batches = make_batches(args.steps, args.batch, args.vocab, seed=1)
    extra: dict[str, Any] = {}
    if args.variant.startswith("kraken"):
        global PIPELINE, BACKGROUND_PUSH
        PIPELINE = args.variant == "kraken-pipelined"
        BACKGROUND_PUSH = args.variant == "kraken-bgpush"
        shards, staleness = 0, 0
        if args.variant.startswith("kraken-remote"):
            s, k = args.variant.removeprefix("kraken-remote").split("-k")
            shards, staleness = int(s), int(k)
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
        rate = run_kraken(batches, args.warmup, args.capacity, shards, staleness, prof)
        if prof is not None:
            steps = args.steps - args.warmup - 1
            print(profile_table(prof, steps, 1e3 * args.batch / rate), file=sys.stderr)
        st = run_kraken.stats  # type: ignore[attr-defined]
        extra = {"live_rows": st.live_rows, "admitted": st.admitted, "evicted": st.evicted,
                 "not_admitted": st.not_admitted}
    else:
        rate = run_torch(batches, args.warmup, args.vocab, args.variant)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": args.variant, "samples_per_s": rate, "peak_rss": peak, **extra}))


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} [{min(xs):,.0f}-{max(xs):,.0f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants",
                   default="kraken,kraken-pipelined,sparseadam,adagrad,torchrec,dense")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="batches per run (after data generation)")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=1_000_000)
    p.add_argument("--capacity", type=int, default=1_500_000,
                   help="Kraken's row budget (smaller than the IDs seen, so it evicts)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--profile", action="store_true",
                   help="with --child kraken*: cProfile the steps after warm-up and print\n"
                        "where the milliseconds of one step go (to stderr)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.reps, args.steps, args.warmup, args.batch, args.vocab, args.capacity = (
            1, 6, 2, 256, 5000, 20_000)
    if args.child:
        args.variant = args.child
        child(args)
        return
    variants = args.variants.split(",")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for v in order:
            cmd = [sys.executable, __file__, "--child", v, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch", str(args.batch), "--vocab",
                   str(args.vocab), "--capacity", str(args.capacity)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode != 0:
                print(f"{v} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                sys.exit(1)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            results[v].append(rec)
            print(f"rep {rep} {v:>10}: {rec['samples_per_s']:,.0f} samples/s, "
                  f"peak {rec['peak_rss'] / 2**30:.2f} GiB", flush=True)
    print(f"\nDLRM, batch {args.batch}, 26 fields x {args.vocab:,} IDs Zipf(1.05), dim 16, "
          f"{args.steps} steps ({args.warmup} warm-up), {args.reps} reps; median [min-max]")
    print(f"{'variant':>10} {'samples/s':>28} {'peak GiB':>20}")
    for v in variants:
        rates = [r["samples_per_s"] for r in results[v]]
        peaks = [r["peak_rss"] / 2**30 for r in results[v]]
        print(f"{v:>10} {summary(rates):>28} "
              f"{statistics.median(peaks):.2f} [{min(peaks):.2f}-{max(peaks):.2f}]")
    if "kraken" in results:
        k = results["kraken"]
        for mine in [v for v in variants if v.startswith("kraken")]:
            for base in ("kraken", "sparseadam", "adagrad", "torchrec", "dense"):
                if base == mine:
                    continue
                if mine in results and base in results:
                    ratios = [a["samples_per_s"] / b["samples_per_s"]
                              for a, b in zip(results[mine], results[base])]
                    print(f"{mine} / {base:<10} throughput {statistics.median(ratios):.2f}x "
                          f"[{min(ratios):.2f}-{max(ratios):.2f}]")
        if "sparseadam" in results:
            mem = [a["peak_rss"] / b["peak_rss"] for a, b in zip(k, results["sparseadam"])]
            print(f"kraken / sparseadam peak memory {statistics.median(mem):.2f}x "
                  f"[{min(mem):.2f}-{max(mem):.2f}]")
        print("kraken table: " + ", ".join(f"{key} {k[-1][key]:,}" for key in
                                           ("live_rows", "admitted", "not_admitted", "evicted")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
