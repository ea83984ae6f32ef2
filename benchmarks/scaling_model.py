#!/usr/bin/env python
"""A scaling model on paper: many trainers and shards, from costs measured on one machine.

Inputs are measured here (BENCHMARKS.md, "Parameter-server shards"): a trainer's dense
compute rate, the unique keys a sample brings after per-batch deduplication, a shard's
CPU cost per key (pull + push), and the wire bytes per key. The model:

    demand          K = T * r * u                     keys/s (pull and push each)
    trainer NIC     r * u * max(w_up, w_down)         must fit its link, each direction
    shard CPU       H * P / c                         keys/s of H hosts of P shard processes
    shard NIC       H * link / max(w_up, w_down)      keys/s all shard-host links carry
    samples/s       min(T * r, trainer NIC, shard CPU, shard NIC) / per-sample keys

with ``w_up = 8 + (8 + 4D)`` bytes per key from a trainer (keys of the pull, keys and
gradients of the push) and ``w_down = 4D`` (rows). It ignores the dense allreduce of many
workers (measured in a later step), stragglers and skew between shards (measured: the
largest of 16 shards holds 1.03-1.08x the mean of real keys).

    python benchmarks/scaling_model.py --rate 30000 --unique 5.0 --shard-us 1.0
"""

from __future__ import annotations

import argparse


def project(trainers: int, hosts: int, gbit: float, *, rate: float, unique: float,
            shard_us: float, dim: int, procs: int) -> tuple[float, str, float]:
    """``(samples/s, what saturates, shard-host link utilisation)`` for one configuration:
    ``trainers`` trainers, ``hosts`` shard hosts of ``procs`` shard processes each."""
    link = gbit * 1e9 / 8
    wire = max(8 + 8 + 4 * dim, 4 * dim)
    limits = {
        "trainer compute": trainers * rate,
        "trainer NIC": trainers * link / (unique * wire),
        "shard CPU": hosts * procs * 1e6 / shard_us / unique,
        "shard NIC": hosts * link / (unique * wire),
    }
    what = min(limits, key=limits.get)  # type: ignore[arg-type]
    samples = limits[what]
    return samples, what, samples * unique * wire / hosts / link


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, required=True,
                   help="samples/s of one trainer's dense compute (its cores)")
    p.add_argument("--unique", type=float, required=True,
                   help="unique keys per sample after per-batch deduplication")
    p.add_argument("--shard-us", type=float, required=True,
                   help="shard CPU microseconds per key for pull + push, per core")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--procs", type=int, default=16,
                   help="shard processes per shard host (one per core)")
    p.add_argument("--memory-gib", type=float, default=256.0, help="memory of a shard host")
    p.add_argument("--row-bytes", type=float, default=116.0,
                   help="measured bytes per live row (table + process)")
    args = p.parse_args()
    print(f"trainer {args.rate:,.0f} samples/s, {args.unique:.2f} unique keys/sample, "
          f"shard {args.shard_us:.2f} us/key per process, {args.procs} per host, dim {args.dim}")
    print(f"{'trainers':>8} {'hosts':>6} {'shards':>6} {'link':>7} {'samples/s':>12} "
          f"{'saturates':>16} {'host link':>9}")
    for gbit in (10, 100):
        for trainers, hosts in ((8, 1), (64, 1), (64, 2), (128, 4), (256, 4), (256, 8),
                                (256, 16)):
            s, what, util = project(trainers, hosts, gbit, rate=args.rate, unique=args.unique,
                                    shard_us=args.shard_us, dim=args.dim, procs=args.procs)
            print(f"{trainers:>8} {hosts:>6} {hosts * args.procs:>6} {gbit:>4}Gb {s:>12,.0f} "
                  f"{what:>16} {util:>8.0%}")
    rows = args.memory_gib * 2**30 * 0.8 / args.row_bytes
    print(f"\na shard host of {args.memory_gib:.0f} GiB holds about {rows / 1e9:.2f}B rows of "
          f"dim {args.dim} at {args.row_bytes:.0f} B/row (80% of its memory)")


if __name__ == "__main__":
    main()
