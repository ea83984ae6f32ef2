#!/usr/bin/env python
"""Serving benchmarks: freshness, latency and throughput under load, replica memory.

The model is the one of ``examples/synthetic.toml`` (DeepFM, hidden 256-128, 8 Zipf fields
over a 200k-ID window that drifts, 4 dense features, one shared dim-16 table with row-wise
AdaGrad, count-min admission (threshold 2) and LRU eviction, plus the dim-1 wide table).

    python benchmarks/serving.py freshness --seconds 60 [--transport push]
        The trainer trains at full speed and publishes with the defaults (rows every 1 s,
        dense every 60 s) into a model directory that ``kraken serve --follow`` tails in its
        own process (or pushes them over gRPC to ``kraken serve --push-port``). For every
        batch: time from its push on the trainer to the moment the server applied the first
        version that contains it (server clock = trainer clock: one host).

    python benchmarks/serving.py freshness --seconds 20 --shards 2
        The same with the tables on 2 shards that publish their own rows (a
        ``ShardPublisher`` per shard, rows every 1 s, the threads ``kraken ps --publish``
        runs; the shards are in the trainer's process, so a push is not a network call) and
        the trainer publishing only the dense weights (every 60 s). For every batch: time
        from its push to the moment the server applied, for every shard, the first version
        of that shard that contains it (``ShardPublisher.next_version()`` at push time, an
        upper bound: a publication in progress at that moment may already hold the push).

    python benchmarks/serving.py latency --seconds 10
        A trainer process (warmed up, then throttled to 2 batches/s at the lowest CPU
        priority, standing in for a trainer on another host) publishes a version every
        second; ``kraken serve --follow`` applies them; this process is the load generator
        (persistent HTTP/1.1 connections on loopback, bodies encoded once). Requests of 1
        instance and of 256 candidates (shared context + 256 candidate items). Closed loop
        with 1, 2, 4 clients, then fixed rates (open loop, latency counted from the scheduled
        send time, so queueing shows) at fractions of the 1-client throughput.

    python benchmarks/serving.py memory --samples 1000000
        Trains, then loads the published snapshot into replicas in fp32, fp16, bf16 and
        int8 and compares the replica's store with the trainer's tables
        (``TableStats.memory_bytes``: index + rows incl. optimizer state and metadata +
        admission sketch). Then the cost of each format: scores of the stream's next
        ``--holdout`` records (100k, never trained on) against the fp32 replica's (max and
        mean absolute difference in probability) and their AUC, and the latency of one
        256-candidate request (its lookups; the whole predict), formats alternating.

Results print as a table and are written to ``benchmarks/results/serving-*.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("KRAKEN_DATA", ROOT.parent / "shared" / "data"))


def run_config(samples: int | None, batch_size: int = 4096) -> Any:
    from kraken.train.config import RunConfig

    return RunConfig.from_dict({
        "data": {"source": "synthetic", "n_records": samples, "n_fields": 8, "n_dense": 4,
                 "vocab": 200_000},
        "model": {"name": "deepfm", "hidden": [256, 128]},
        "tables": {"emb": {"dim": 16, "capacity": 2_000_000,
                           "optimizer": {"type": "rowwise_adagrad", "lr": 0.05},
                           "admission": {"type": "count_min", "threshold": 2},
                           "eviction": [{"type": "lru", "high_watermark": 0.95,
                                         "low_watermark": 0.85}]}},
        "trainer": {"batch_size": batch_size, "dense_lr": 0.001, "window": 100_000,
                    "log_every_s": 3600},
    })


def build(samples: int | None, model_dir: Any, **publisher_kw: Any) -> tuple[Any, Any, Any]:
    from kraken.serving import ModelSpec, Publisher
    from kraken.train import Trainer
    from kraken.train.config import build_run

    cfg = run_config(samples)
    run = build_run(cfg)
    pub = Publisher(run.ps, run.model, ModelSpec.from_run(run), model_dir, **publisher_kw)
    tr = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                 config=cfg.trainer, publisher=pub)
    return run, tr, pub


def start_server(model_dir: Path | None, *extra: str) -> tuple[subprocess.Popen[str], str]:
    source = ["--model-dir", str(model_dir), "--follow"] if model_dir else ["--push-port", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "kraken.cli.main", "serve", *source,
                             "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("kraken serve: http://"):
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"server did not start: {line!r} {err}")
    if model_dir is None:
        return proc, line.split()[2] + " " + line.split("pushes on ")[1].split(";")[0]
    return proc, line.split()[2]


def get_json(url: str, path: str) -> Any:
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def pct(x: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(x, dtype=np.float64), q)) if len(x) else float("nan")


def save(name: str, doc: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"serving-{name}-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


# -- freshness ---------------------------------------------------------------------------


class _Recording:
    """Wraps a Publisher: records (wall time of the push, version that will carry it)."""

    def __init__(self, pub: Any) -> None:
        self.pub = pub
        self.pushes: list[tuple[float, int]] = []

    def maybe_publish(self, event_time: int | None = None) -> Any:
        t = time.time()
        before = self.pub.version
        out = self.pub.maybe_publish(event_time)
        self.pushes.append((t, self.pub.version if self.pub.version != before else before + 1))
        return out

    def publish(self, *, dense: bool = False, full: bool = False) -> Any:
        return self.pub.publish(dense=dense, full=full)


class _RecordingShards:
    """Wraps the dense-only Publisher: after each batch's push, records (wall time, the
    version of every shard that will carry it)."""

    def __init__(self, pub: Any, shards: list[Any]) -> None:
        self.pub, self.shards = pub, shards
        self.pushes: list[tuple[float, list[int]]] = []

    def maybe_publish(self, event_time: int | None = None) -> Any:
        t = time.time()
        self.pushes.append((t, [sp.next_version() for sp in self.shards]))
        return self.pub.maybe_publish(event_time)

    def publish(self, *, dense: bool = False, full: bool = False) -> Any:
        return self.pub.publish(dense=dense, full=full)


def freshness_shards(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from kraken.nn.embedding import EmbeddingLayer
    from kraken.ps import ShardedPS
    from kraken.serving import ModelSpec, Publisher, ShardPublisher
    from kraken.train import Trainer
    from kraken.train.config import build_run

    with tempfile.TemporaryDirectory(prefix="kraken-fresh-shards-") as tmp:
        model_dir = Path(tmp)
        cfg = run_config(None)
        run = build_run(cfg)
        ps = ShardedPS.in_process(cfg.tables, args.shards, evict_every=cfg.ps.evict_every)
        emb = EmbeddingLayer(ps, run.stream.schema, table="emb",
                             wide_table="wide" if run.model.needs_wide else None,
                             sequence_fields=run.model.sequence_fields,
                             **dataclasses.asdict(cfg.embedding))
        run = dataclasses.replace(run, ps=ps, embedding=emb)
        pub = Publisher(ps, run.model, ModelSpec.from_run(run), model_dir, rows=False)
        shards = [ShardPublisher(ep, model_dir) for ep in ps.endpoints]
        pub.publish()  # the spec and dense weights
        for sp in shards:
            sp.publish()  # each shard's first snapshot
            sp.start()
        tr = Trainer(model=run.model, embedding=emb, ps=ps, stream=run.stream,
                     config=cfg.trainer)
        rec = _RecordingShards(pub, shards)
        tr.publisher = rec
        proc, url = start_server(model_dir)
        history: list[dict[int, float]] = [{} for _ in shards]
        stop = threading.Event()

        def collect() -> None:
            for i, s in enumerate(get_json(url, "/v1/model")["shards"]):
                for v, _p, a in s["history"]:
                    history[i][v] = a

        def collector() -> None:
            while not stop.wait(5.0):
                collect()

        th = threading.Thread(target=collector, daemon=True)
        th.start()
        timer = threading.Timer(args.seconds, tr.request_stop, args=("time",))
        timer.start()
        try:
            summary = tr.run()
            for sp in shards:
                sp.stop()  # joins the thread, publishes the last rows
            want = [sp.version for sp in shards]
            deadline = time.time() + 30
            while ([s["version"] for s in get_json(url, "/v1/model")["shards"]] != want
                   and time.time() < deadline):
                time.sleep(0.05)
            stop.set()
            collect()
            info = get_json(url, "/v1/model")
        finally:
            timer.cancel()
            stop.set()
            for sp in shards:
                sp.stop()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    fresh = []
    for t, vs in rec.pushes[:-1]:
        seen = [min((a for v, a in history[i].items() if v >= vs[i]), default=None)
                for i in range(len(shards))]
        if all(a is not None for a in seen):
            fresh.append(max(seen) - t)  # type: ignore[type-var]
    doc = {"transport": "directory", "shards": args.shards, "seconds": summary.seconds,
           "samples": summary.samples, "samples_per_s": summary.samples / summary.seconds,
           "batches": summary.batches, "shard_versions": want,
           "server_gaps": info["sync"]["gaps"], "server_shard_gaps": info["sync"]["shard_gaps"],
           "push_to_visible_s": {"n": len(fresh), "p50": pct(fresh, 50), "p99": pct(fresh, 99),
                                 "max": max(fresh) if fresh else None}}
    print(json.dumps(doc, indent=2))
    save(f"freshness-shards{args.shards}", doc)
    return doc


def freshness(args: argparse.Namespace) -> dict[str, Any]:
    if args.shards:
        return freshness_shards(args)
    with tempfile.TemporaryDirectory(prefix="kraken-fresh-") as tmp:
        model_dir = Path(tmp)
        if args.transport == "push":
            from kraken.serving.push import PushTransport

            proc, both = start_server(None)
            url, address = both.split()
            run, tr, pub = build(None, PushTransport([address]))
        else:
            proc, url = start_server(model_dir)
            run, tr, pub = build(None, model_dir)
        rec = _Recording(pub)
        tr.publisher = rec
        pub.publish()  # the first snapshot
        history: dict[int, tuple[float, float]] = {}
        stop = threading.Event()

        def collect() -> None:  # history holds 256 versions: poll well within that
            while not stop.wait(5.0):
                for v, p, a in get_json(url, "/v1/model")["history"]:
                    history[v] = (p, a)

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        timer = threading.Timer(args.seconds, tr.request_stop, args=("time",))
        timer.start()
        try:
            summary = tr.run()
            deadline = time.time() + 30
            while get_json(url, "/v1/model")["version"] < pub.version and time.time() < deadline:
                time.sleep(0.05)
            stop.set()
            for v, p, a in get_json(url, "/v1/model")["history"]:
                history[v] = (p, a)
            info = get_json(url, "/v1/model")
        finally:
            timer.cancel()
            stop.set()
            pub.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    applied = sorted(history.items())
    versions = np.array([v for v, _ in applied])
    applied_at = np.array([a for _, (_, a) in applied])
    delays = [a - p for _, (p, a) in applied if p > 0]
    fresh = []
    for t, v in rec.pushes[:-1]:
        i = np.searchsorted(versions, v)
        if i < len(versions):
            fresh.append(applied_at[i] - t)
    doc = {"transport": args.transport, "seconds": summary.seconds, "samples": summary.samples,
           "samples_per_s": summary.samples / summary.seconds, "batches": summary.batches,
           "versions": pub.version, "versions_seen": len(applied),
           "server_gaps": info["sync"]["gaps"],
           "push_to_visible_s": {"n": len(fresh), "p50": pct(fresh, 50), "p99": pct(fresh, 99),
                                 "max": max(fresh) if fresh else None},
           "publish_to_applied_s": {"n": len(delays), "p50": pct(delays, 50),
                                    "p99": pct(delays, 99),
                                    "max": max(delays) if delays else None}}
    print(json.dumps(doc, indent=2))
    save(f"freshness-{args.transport}", doc)
    return doc


# -- latency -----------------------------------------------------------------------------


def _throttled_trainer(args: argparse.Namespace) -> None:
    """Subprocess: warm up, then train ``--rate`` batches/s and publish every second.

    It runs at the lowest CPU priority with one torch thread: on this 2-core machine the
    trainer stands in for a remote one, and what is measured is the server applying its
    syncs, not the server competing with training compute.
    """
    import torch

    model_dir = Path(args.model_dir)
    torch.set_num_threads(1)
    run, tr, pub = build(None, model_dir)

    class Throttle:
        def __init__(self) -> None:
            self.next = 0.0
            self.warm = args.warmup

        def maybe_publish(self, event_time: int | None = None) -> Any:
            if tr.samples < self.warm:
                return None
            if self.warm:
                self.warm = 0
                os.nice(19)
                pub.publish(full=True)
                print("ready", flush=True)
                self.next = time.time()
            self.next += 1.0 / args.rate
            time.sleep(max(0.0, self.next - time.time()))
            return pub.maybe_publish(event_time)

        def publish(self, *, dense: bool = False, full: bool = False) -> Any:
            return pub.publish(dense=dense, full=full)

    tr.publisher = Throttle()
    signal.signal(signal.SIGTERM, lambda *_: tr.request_stop("SIGTERM"))
    tr.run()


def _bodies(spec_features: dict[str, Any], n: int) -> bytes:
    rng = np.random.default_rng(0)
    fields, dense = spec_features["fields"], spec_features["dense"]
    ids = lambda: int(min(rng.zipf(1.2), 200_000))  # noqa: E731
    if n == 1:
        rec = {f: ids() for f in fields} | {d: float(rng.standard_normal()) for d in dense}
        return json.dumps({"instances": [rec]}).encode()
    ctx = {f: ids() for f in fields[:4]} | {d: float(rng.standard_normal()) for d in dense}
    cands = [{f: ids() for f in fields[4:]} for _ in range(n)]
    return json.dumps({"context": ctx, "candidates": cands}).encode()


class _Conn:
    """A persistent connection. TCP_NODELAY: http.client writes headers and body in two
    segments, which with Nagle's algorithm and delayed ACKs stalls every request 40 ms."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.c = http.client.HTTPConnection(host, int(port), timeout=30)
        self.c.connect()
        self.c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, body: bytes) -> int:
        self.c.request("POST", "/v1/predict", body=body,
                       headers={"Content-Type": "application/json"})
        r = self.c.getresponse()
        r.read()
        return r.status


def closed_loop(url: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    end = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = _Conn(url)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            if conn.post(body) != 200:
                errors[i] += 1
            lat[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = [x for ls in lat for x in ls]
    return {"mode": "closed", "clients": clients, "requests": len(all_lat),
            "rps": len(all_lat) / wall, "p50_ms": 1e3 * pct(all_lat, 50),
            "p99_ms": 1e3 * pct(all_lat, 99), "errors": sum(errors)}


def fixed_rate(url: str, body: bytes, rate: float, seconds: float,
               workers: int = 8) -> dict[str, Any]:
    """Open loop: request k is due at start + k / rate; latency counts from that due time."""
    n = int(rate * seconds)
    start = time.perf_counter() + 0.05
    lat = np.full(n, np.nan)
    errors = [0]
    lock = threading.Lock()
    nxt = [0]

    def worker() -> None:
        conn = _Conn(url)
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= n:
                return
            due = start + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if conn.post(body) != 200:
                errors[0] += 1
            lat[k] = time.perf_counter() - due

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"mode": "fixed", "offered_rps": rate, "requests": n, "achieved_rps": n / wall,
            "p50_ms": 1e3 * pct(lat, 50), "p99_ms": 1e3 * pct(lat, 99), "errors": errors[0]}


def latency(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kraken-lat-") as tmp:
        trainer = subprocess.Popen([sys.executable, __file__, "_trainer", "--model-dir", tmp,
                                    "--warmup", str(args.warmup), "--rate", str(args.rate)],
                                   stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert trainer.stdout is not None
        if trainer.stdout.readline().strip() != "ready":
            raise RuntimeError("the trainer did not warm up")
        server, url = start_server(Path(tmp))
        try:
            deadline = time.time() + 60
            while not get_json(url, "/v1/model")["ready"] and time.time() < deadline:
                time.sleep(0.1)
            features = get_json(url, "/v1/model")["features"]
            bodies = {1: _bodies(features, 1), 256: _bodies(features, 256)}
            rows = []
            for n in (1, 256):
                closed_loop(url, bodies[n], 1, 2.0)  # warm-up
                base = None
                for clients in (1, 2, 4):
                    v0 = get_json(url, "/v1/model")["versions_applied"]
                    r = closed_loop(url, bodies[n], clients, args.seconds)
                    r |= {"candidates": n,
                          "syncs": get_json(url, "/v1/model")["versions_applied"] - v0}
                    rows.append(r)
                    print(r, flush=True)
                    base = base or r["rps"]
                for frac in (0.25, 0.5, 0.6, 0.7, 0.8, 0.9):
                    v0 = get_json(url, "/v1/model")["versions_applied"]
                    r = fixed_rate(url, bodies[n], frac * base, args.seconds)
                    r |= {"candidates": n, "fraction_of_1_client": frac,
                          "syncs": get_json(url, "/v1/model")["versions_applied"] - v0}
                    rows.append(r)
                    print(r, flush=True)
            info = get_json(url, "/v1/model")
        finally:
            for p in (server, trainer):
                p.send_signal(signal.SIGTERM)
            for p in (server, trainer):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
    doc = {"rows": rows, "server_version": info["version"], "sync_gaps": info["sync"]["gaps"],
           "replica_rows": info["tables"], "body_bytes": {k: len(v) for k, v in bodies.items()}}
    save("latency", doc)
    return doc


# -- memory ------------------------------------------------------------------------------


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Replica bytes against the trainer's tables, then the cost of each replica format:
    scores on held-out samples (the stream's next ``--holdout`` records, never trained on)
    against the fp32 replica's, their AUC, and the latency of a request's lookups."""
    import dataclasses

    from kraken.data.synthetic import SyntheticStream
    from kraken.serving import DirectoryFollower, Replica
    from kraken.train.metrics.auc import exact_auc

    formats = ("fp32", "fp16", "bf16", "int8")
    with tempfile.TemporaryDirectory(prefix="kraken-mem-") as tmp:
        if args.data == "ml-1m":
            run, tr, pub, held = _movielens(Path(tmp))
        else:
            run, tr, pub = build(args.samples, Path(tmp), snapshot_interval=0.0)
            held = SyntheticStream(dataclasses.replace(run.stream.config, n_records=None)
                                   ).batches(4096, start=args.samples)
        tr.run()
        pub.publish(full=True)
        stats = run.ps.stats()
        trainer = {n: s.memory_bytes for n, s in stats.items()}
        sketch = {n: 0 if c.admission.new_state() is None else c.admission.new_state().nbytes
                  for n, c in run.ps.tables.items()}
        live = {n: s.live_rows for n, s in stats.items()}
        out: dict[str, Any] = {"data": args.data, "samples": args.samples, "live_rows": live,
                               "trainer_bytes": trainer, "trainer_sketch_bytes": sketch,
                               "replica": {}}
        total = sum(trainer.values())
        no_sketch = total - sum(sketch.values())
        out["trainer_bytes_per_key_without_sketch"] = no_sketch / max(live.values())
        replicas = {}
        for precision in formats:
            r = Replica(precision=precision)
            DirectoryFollower(r, tmp).poll()
            replicas[precision] = r
            b = r.info().memory_bytes
            store = r._m.store  # noqa: SLF001
            n = max(1, len(store))
            out["replica"][precision] = {
                "bytes": b, "ratio": b / total, "ratio_without_sketch": b / no_sketch,
                "bytes_per_key": b / n, "row_bytes": store.row_bytes,
                "index_bytes_per_key": store.index_bytes / n}
    batches = []
    for b in held:
        batches.append(b)
        if sum(len(x) for x in batches) >= args.holdout:
            break
    labels = np.concatenate([b.label for b in batches])
    scores = {p: np.concatenate([r.predict(b).scores for b in batches])
              for p, r in replicas.items()}
    for p in formats:
        d = np.abs(scores[p].astype(np.float64) - scores["fp32"])
        out["replica"][p].update({"auc": exact_auc(labels, scores[p]),
                                  "max_abs_diff_vs_fp32": float(d.max()),
                                  "mean_abs_diff_vs_fp32": float(d.mean())})
    out["holdout"] = int(labels.shape[0])
    out["latency"] = _lookup_latency(replicas, batches[0], args.reps)
    print(json.dumps(out, indent=2))
    save("memory", out)
    return out


class _Head:
    """The first ``stop`` records of a stream (the rest is held out)."""

    def __init__(self, stream: Any, stop: int) -> None:
        self.stream, self.stop = stream, stop
        self.schema, self.features = stream.schema, stream.features

    @property
    def skipped(self) -> int:
        return int(self.stream.skipped)

    def batches(self, batch_size: int, start: int = 0) -> Any:
        for b in self.stream.batches(batch_size, start):
            begin = b.offset - len(b)
            if begin >= self.stop:
                return
            yield b if b.offset <= self.stop else b.slice(0, self.stop - begin)


def _movielens(model_dir: Path) -> tuple[Any, Any, Any, Any]:
    """``examples/movielens-1m.toml`` trained on the first 90% of the ratings (time order);
    the last 10% are held out."""
    from kraken.config import read_config_file
    from kraken.serving import ModelSpec, Publisher
    from kraken.train import Trainer
    from kraken.train.config import RunConfig, build_run

    doc = read_config_file(ROOT / "examples" / "movielens-1m.toml")
    doc["data"]["root"] = str(DATA / "movielens" / "ml-1m")
    cfg = RunConfig.from_dict(doc)
    run = build_run(cfg)
    n = len(run.stream)
    stop = int(n * 0.9)
    pub = Publisher(run.ps, run.model, ModelSpec.from_run(run), model_dir,
                    snapshot_interval=0.0)
    tr = Trainer(model=run.model, embedding=run.embedding, ps=run.ps,
                 stream=_Head(run.stream, stop), config=cfg.trainer, publisher=pub)
    return run, tr, pub, run.stream.batches(4096, start=stop)


def _lookup_latency(replicas: dict[str, Any], batch: Any, reps: int) -> dict[str, Any]:
    """Per format, median [min-max] microseconds of a 256-candidate request: its store
    lookups (every table, the request's distinct keys) and the whole ``predict``; formats
    alternate within each repetition so they share the machine's state."""
    import torch

    torch.set_num_threads(1)  # as `kraken serve` (--threads 1)
    req = batch.slice(0, 256)
    keys = np.unique(req.keys.reshape(-1))
    times: dict[str, dict[str, list[float]]] = {p: {"lookup": [], "predict": []}
                                                for p in replicas}
    for _ in range(reps):
        for p, r in replicas.items():
            store = r._m.store  # noqa: SLF001
            t0 = time.perf_counter()
            for name in store.tables:
                store.lookup(name, keys)
            t1 = time.perf_counter()
            r.predict(req)
            t2 = time.perf_counter()
            times[p]["lookup"].append((t1 - t0) * 1e6)
            times[p]["predict"].append((t2 - t1) * 1e6)
    out: dict[str, Any] = {"request": {"candidates": 256, "distinct_keys": int(keys.shape[0])}}
    for p, t in times.items():
        out[p] = {k: {"median_us": pct(v, 50), "min_us": min(v), "max_us": max(v)}
                  for k, v in t.items()}
        out[p]["lookup_vs_fp16"] = pct(t["lookup"], 50) / pct(times["fp16"]["lookup"], 50)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("freshness")
    f.add_argument("--seconds", type=float, default=60.0)
    f.add_argument("--transport", choices=["directory", "push"], default="directory")
    f.add_argument("--shards", type=int, default=0,
                   help="tables on N shards that publish their own rows (directory only)")
    lat = sub.add_parser("latency")
    lat.add_argument("--seconds", type=float, default=10.0)
    lat.add_argument("--warmup", type=int, default=300_000, help="samples before serving")
    lat.add_argument("--rate", type=float, default=2.0, help="trainer batches per second")
    m = sub.add_parser("memory")
    m.add_argument("--samples", type=int, default=1_000_000)
    m.add_argument("--data", choices=["synthetic", "ml-1m"], default="synthetic",
                   help="ml-1m: examples/movielens-1m.toml on the first 90%% of the "
                        "ratings, the last 10%% held out ($KRAKEN_DATA/movielens/ml-1m)")
    m.add_argument("--holdout", type=int, default=100_000,
                   help="held-out samples scored by every replica format")
    m.add_argument("--reps", type=int, default=300, help="repetitions of the latency timing")
    t = sub.add_parser("_trainer")
    t.add_argument("--model-dir", required=True)
    t.add_argument("--warmup", type=int, default=300_000)
    t.add_argument("--rate", type=float, default=2.0)
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    {"freshness": freshness, "latency": latency, "memory": memory,
     "_trainer": _throttled_trainer}[args.cmd](args)


if __name__ == "__main__":
    main()
