"""``kraken demo``: continual training and real-time serving on the embedded default stream.

A DeepFM model learns from a drifting synthetic click stream (or MovieLens-1M in
time order with ``--data movielens-1m`` when the real data is present): embeddings
in a budgeted table with count-min admission, LRU eviction and row-wise AdaGrad;
dense layers on Adam; every batch scored before it is learned (progressive AUC). On the
synthetic stream the summary shows that AUC beside its ceiling: the AUC of the stream's
hidden true model on the same samples, the best any model could do.

Beside the trainer a prediction server runs in the same process (on 127.0.0.1, a free
port unless ``--port``): the trainer publishes a version every second into the run's
``model/`` directory, a replica follows it, and the progress line shows the version
served and its freshness lag next to training progress. At the end one request is
sent to ``POST /v1/predict`` and the sync delays are summarised.

``--realtime`` trains from a live event log instead: redis-server, a replayer writing
impressions and delayed clicks, the trainer joining them, the same prediction server
(:mod:`kraken.cli.realtime`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kraken.cli.realtime import add_arguments as add_realtime_arguments
from kraken.cli.realtime import run_realtime
from kraken.cli.train import train_and_report
from kraken.data.synthetic import SyntheticStream
from kraken.errors import ConfigError
from kraken.serving import DirectoryFollower, Replica
from kraken.train.config import RunConfig
from kraken.train.metrics import AUC

DATA_HINT = Path("../shared/data/movielens/ml-1m")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="continual training on the embedded synthetic stream")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "movielens-1m"])
    p.add_argument("--data-dir", default=str(DATA_HINT), help="ml-1m folder for movielens-1m")
    p.add_argument("--samples", type=int, default=300_000, help="samples to train on")
    p.add_argument("--model", default="deepfm")
    p.add_argument("--run-dir", default=None, help="default: a temporary directory")
    p.add_argument("--port", type=int, default=0, help="serving port (default: a free one)")
    p.add_argument("--no-serve", action="store_true", help="train only, no prediction server")
    add_realtime_arguments(p)
    p.set_defaults(run=run)


def demo_config(data: str, data_dir: str, samples: int, model: str) -> RunConfig:
    if data == "synthetic":
        src: dict[str, Any] = {"source": "synthetic", "n_records": samples, "vocab": 200_000}
        capacity = 50_000
    else:
        src = {"source": "movielens-1m", "root": data_dir}
        capacity = 20_000
    return RunConfig.from_dict({
        "data": src,
        "model": {"name": model},
        "tables": {"emb": {
            "dim": 16, "capacity": capacity,
            "optimizer": {"type": "rowwise_adagrad", "lr": 0.05},
            "admission": {"type": "count_min", "threshold": 2, "width": 1 << 18},
            "eviction": [{"type": "lru", "high_watermark": 0.95, "low_watermark": 0.85}],
        }},
        "trainer": {"batch_size": 2048, "dense_lr": 0.002, "window": 50_000,
                    "log_every_s": 1.0, "max_samples": samples},
    })


def run(args: argparse.Namespace) -> int:
    if args.realtime:
        return run_realtime(args)
    config = demo_config(args.data, args.data_dir, args.samples, args.model)
    if args.run_dir:
        _demo(config, Path(args.run_dir), args)
    else:
        with tempfile.TemporaryDirectory(prefix="kraken-demo-") as tmp:
            _demo(config, Path(tmp), args)
    return 0


def synthetic_auc_ceiling(config: RunConfig, samples: int, batch_size: int = 16_384) -> float:
    """AUC of the synthetic stream's hidden true model (``true_logit``) on its first
    ``samples`` records: what a perfect learner would score on what the demo trained on."""
    stream = config.data.open()
    if not isinstance(stream, SyntheticStream):
        raise ConfigError(f"an AUC ceiling needs the synthetic stream, not {config.data}")
    auc = AUC()
    for b in stream.batches(batch_size):
        n = min(len(b), samples - (b.offset - len(b)))
        if n <= 0:
            break
        pos = np.arange(b.offset - len(b), b.offset - len(b) + n)
        logit = stream.true_logit(b.keys[:n], b.dense[:n], pos)
        auc.update(b.label[:n], (1.0 / (1.0 + np.exp(-logit))).astype(np.float32))
    return auc.get()


def _demo(config: RunConfig, run_dir: Path, args: argparse.Namespace) -> None:
    ceiling = ((lambda n: synthetic_auc_ceiling(config, n))
               if config.data.source == "synthetic" else None)
    if args.no_serve:
        train_and_report(config, run_dir, title="kraken demo", auc_ceiling=ceiling)
        return
    model_dir = run_dir / "model"
    with serving(model_dir, args.port) as (replica, summary):
        def status() -> str:
            if not replica.ready:
                return "serve: waiting"
            return f"serve v{replica.version} lag {time.time() - replica.publish_time:.1f}s"

        train_and_report(config, run_dir, title="kraken demo", publish_dir=model_dir,
                         progress_extra=status, summary_extra=summary, auc_ceiling=ceiling)


@contextmanager
def serving(model_dir: Path, port: int = 0,
            lag: Callable[[], dict[str, float] | None] | None = None) -> Iterator[
        tuple[Replica, Callable[[], list[tuple[str, str]]]]]:
    """A prediction server on 127.0.0.1:``port`` (0: a free one) whose replica follows
    ``model_dir``; yields the replica and a function of the serving summary's rows (it
    waits for the newest version published, then sends one request). Stopped on exit.
    ``lag``, when given, is the consumer lag of the trainer's event log, for ``/metrics``."""
    from kraken.serving.app import create_app  # noqa: PLC0415 - FastAPI only when serving
    from kraken.serving.http import HttpServer  # noqa: PLC0415

    replica = Replica()
    follower = DirectoryFollower(replica, model_dir).start()
    try:
        app = create_app(replica, sync_status=lambda: {
            "gaps": follower.gaps, "errors": follower.errors,
            "consumer_lag": lag() if lag is not None else None})
        server = HttpServer(app, "127.0.0.1", port).start()
        try:
            print(f"serving on {server.url} (POST /v1/predict, GET /v1/model, GET /metrics), "
                  f"following {model_dir}")
            yield replica, lambda: _serving_summary(replica, follower, server.url)
        finally:
            server.stop()
    finally:
        follower.stop()


def _serving_summary(replica: Replica, follower: DirectoryFollower,
                     url: str) -> list[tuple[str, str]]:
    from kraken.serving.directory import scan_versions  # noqa: PLC0415

    deltas, snapshots = scan_versions(follower.model_dir)
    follower.wait_for(max([0, *deltas, *snapshots]), timeout=10)
    info = replica.info()
    delays = np.array([a - p for _, p, a in info.history]) if info.history else np.zeros(1)
    rows = [("served version", f"{info.version} ({info.versions_applied} applied, "
                               f"{info.snapshots_loaded} snapshot(s), {follower.gaps} gap(s))"),
            ("sync delay", f"p50 {np.percentile(delays, 50):.3f}s  p99 "
                           f"{np.percentile(delays, 99):.3f}s (publish -> applied)"),
            ("replica", ", ".join(f"{n} {t['rows']:,} rows" for n, t in info.tables.items())
             + f", {info.memory_bytes / 2**20:.1f} MB")]
    try:
        fields = replica.spec.features
        record = {name: 1 for name in fields.fields} | {name: 0.0 for name in fields.dense}
        req = urllib.request.Request(f"{url}/v1/predict", method="POST",
                                     data=json.dumps({"instances": [record]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            body = json.loads(resp.read())
        rows.append(("sample request", f"POST /v1/predict -> score {body['scores'][0]:.4f} "
                                       f"from version {body['version']}"))
    except OSError as exc:
        rows.append(("sample request", f"POST /v1/predict failed: {exc}"))
    return rows
