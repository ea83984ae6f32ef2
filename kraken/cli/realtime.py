"""``kraken demo --realtime``: online training from a live event log, served as it learns.

Four parts run together until Ctrl-C, SIGTERM or ``--seconds``::

    redis-server        a local one in the run's temporary directory (or --redis-url)
        ^  XADD         LiveFeed: impressions now, clicks seconds later, at --rate events/s
        |  XREADGROUP   the trainer reads the log ([log] of the run file), joins each
        |               impression with its clicks (window_s), learns, checkpoints
        v  versions     every second into the run's model/ directory
    prediction server   a replica following that directory, POST /v1/predict on 127.0.0.1

The run file is ``examples/realtime.toml`` (:data:`REALTIME_RUN`), or ``--config``; the
demo points its ``[log] url`` at the server it uses. On another server (``--redis-url``)
the keys get a prefix of their own for this run, deleted at the end.

One progress line a second shows the trainer's samples, window AUC and consumer lag
(``lag E entries S s``: entries written but not yet read, and how long the oldest has
waited), then ``in R ev/s`` (events written by the feed), ``event->served A s`` (the
newest event's time minus the newest event time trained into the served version, whole
seconds) and the served version. Stopping lets the trainer train what it read, write
its checkpoint (the log's position in it, then ``XACK``) and a last version; then the
feed, the prediction server and redis-server stop, in that order.
"""

from __future__ import annotations

import argparse
import copy
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kraken.cli.train import train_and_report
from kraken.config import read_config_file
from kraken.data.logconfig import LogConfig
from kraken.data.redis_server import RedisServer
from kraken.errors import ConfigError
from kraken.train.config import RunConfig
from kraken.train.trainer import Trainer

__all__ = ["REALTIME_RUN", "add_arguments", "realtime_run", "run_realtime"]

REALTIME_RUN: dict[str, Any] = {
    "log": {"url": "redis://127.0.0.1:6379/0", "prefix": "kraken", "partitions": 1,
            "block_ms": 100, "window_s": 5, "label_actions": ["click"],
            "action_types": ["click"],
            "schema": {"categorical": [f"c{i}" for i in range(8)],
                       "dense": [f"d{i}" for i in range(4)]}},
    "model": {"name": "deepfm", "hidden": [64, 32]},
    "tables": {"emb": {"dim": 8, "capacity": 200_000,
                       "optimizer": {"type": "rowwise_adagrad", "lr": 0.05},
                       "admission": {"type": "count_min", "threshold": 2},
                       "eviction": [{"type": "lru", "high_watermark": 0.95,
                                     "low_watermark": 0.85}]}},
    "trainer": {"batch_size": 512, "dense_lr": 0.002, "window": 20_000, "log_every_s": 1.0,
                "checkpoint_every_s": 30.0},
}
"""The demo's run file, as ``examples/realtime.toml`` writes it (the schema is what
:class:`~kraken.cli.livefeed.LiveFeed` writes: ``c0..c7`` categorical, ``d0..d3`` dense)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("real time (--realtime)")
    g.add_argument("--realtime", action="store_true",
                   help="train from a live event log on redis-server, fed at --rate")
    g.add_argument("--rate", type=float, default=2000.0,
                   help="events (impressions and clicks) written per second")
    g.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: Ctrl-C or SIGTERM)")
    g.add_argument("--redis-url", default=None,
                   help="use this running server instead of starting redis-server")
    g.add_argument("--config", default=None,
                   help="run file with a [log] section (default: examples/realtime.toml)")
    g.add_argument("--click-delay", type=float, default=1.5,
                   help="mean seconds from an impression to its click")


def realtime_run(url: str, config: str | None = None, prefix: str | None = None,
                 ) -> dict[str, Any]:
    """The run file's document (``config`` or :data:`REALTIME_RUN`) with ``[log] url``
    set to ``url`` (and ``prefix`` when given); validated by the caller."""
    doc = read_config_file(Path(config)) if config else copy.deepcopy(REALTIME_RUN)
    if "log" not in doc:
        raise ConfigError(f"{config}: log: the real-time demo needs a [log] section")
    doc["log"] = {**doc["log"], "url": url, **({"prefix": prefix} if prefix else {})}
    return doc


@contextmanager
def _log_server(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """``(url, prefix of this run or None)``: a redis-server started here, or theirs."""
    if args.redis_url:
        yield args.redis_url, f"kraken-demo-{uuid.uuid4().hex[:8]}"
        return
    with RedisServer(tmp / "redis") as server:
        print(f"redis-server on {server.url} (files in {server.dir})")
        yield server.url, None


def run_realtime(args: argparse.Namespace) -> int:
    if args.seconds is not None and not args.seconds > 0:
        raise ConfigError(f"--seconds: expected > 0, got {args.seconds}")

    def interrupted(signum: int, _frame: Any) -> None:  # outside training: unwind, stop all
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, interrupted)
    try:
        with ExitStack() as stack:
            if args.run_dir:
                run_dir = Path(args.run_dir)
            else:
                run_dir = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="kraken-demo-")))
            url, prefix = stack.enter_context(_log_server(args, run_dir))
            doc = realtime_run(url, args.config, prefix)
            config = RunConfig.from_dict(doc)
            log = LogConfig.from_dict(doc["log"])
            if prefix is not None:
                stack.callback(_delete_keys, log)
            _realtime(config, log, run_dir, args)
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


def _delete_keys(log: LogConfig) -> None:
    import redis  # noqa: PLC0415 - the log's client, only for --realtime

    client = redis.Redis.from_url(log.url)
    try:
        client.delete(*[k for p in range(log.partitions)
                        for k in (log.impressions_key(p), log.actions_key(p))])
    except redis.exceptions.RedisError:
        pass
    finally:
        client.close()


def _realtime(config: RunConfig, log: LogConfig, run_dir: Path,
              args: argparse.Namespace) -> None:
    from kraken.cli.demo import serving  # noqa: PLC0415 - FastAPI only when serving
    from kraken.cli.livefeed import LiveFeed  # noqa: PLC0415 - imports redis

    feed = LiveFeed(log, args.rate, click_delay_s=args.click_delay,
                    maxlen=2_000_000 if args.redis_url else None)
    model_dir = run_dir / "model"
    trainer: list[Trainer] = []
    with serving(model_dir, args.port) as (replica, summary):
        feed.start()
        print(f"feeding {log.prefix}:impressions:* and {log.prefix}:actions:* at "
              f"{args.rate:,.0f} events/s (clicks after {args.click_delay:g} s on average)")

        def status() -> str:
            s = feed.stats()
            line = f"in {s.rate:,.0f} ev/s"
            if feed.error is not None:
                line += f" (feed stopped: {feed.error})"
            if not replica.ready:
                return line + "  serve: waiting"
            age = max(0, s.newest_ts - replica.max_event_time)
            return f"{line}  event->served {age}s  serve v{replica.version}"

        def closing() -> list[tuple[str, str]]:
            feed.stop()
            s = feed.stats()
            rows = [("events written", f"{s.events:,} ({s.impressions:,} impressions, "
                                       f"{s.clicks:,} clicks) in {s.seconds:.1f}s, "
                                       f"{s.events / max(s.seconds, 1e-9):,.0f}/s")]
            if feed.error is not None:
                rows.append(("feed error", str(feed.error)))
            if trainer:
                rows += _log_rows(trainer[0])
            rows += summary()
            if replica.ready:
                rows.append(("event->served", f"{max(0, s.newest_ts - replica.max_event_time)}"
                                              f"s (newest event written - newest event "
                                              f"time in the served version)"))
            return rows

        def started(t: Trainer) -> None:
            trainer.append(t)
            if args.seconds is not None:
                timer = threading.Timer(args.seconds, t.request_stop,
                                        (f"--seconds {args.seconds:g} reached",))
                timer.daemon = True
                timer.start()

        try:
            train_and_report(config, run_dir, title="kraken demo --realtime",
                             publish_dir=model_dir, progress_extra=status,
                             summary_extra=closing, on_trainer=started)
        finally:
            feed.stop()


def _log_rows(trainer: Trainer) -> list[tuple[str, str]]:
    log = trainer.log
    if log is None:
        return []
    c: dict[str, int] = dict(getattr(log, "counters", {}))
    lag = log.lag()
    rows = [("consumer lag", f"{lag['entries']:,.0f} entries, {lag['seconds']:.1f}s "
                             f"(written, not yet read)")]
    if c:
        rows.append(("log read", f"{c.get('entries', 0):,} entries, "
                                 f"{c.get('malformed', 0):,} malformed, "
                                 f"{c.get('lost', 0):,} lost to trimming, "
                                 f"{c.get('outages', 0):,} outage(s)"))
        rows.append(("join", f"{c.get('join_positives', 0):,} positives, "
                             f"{c.get('join_negatives', 0):,} negatives, "
                             f"{c.get('join_corrections', 0):,} corrections, "
                             f"{c.get('join_orphan_actions', 0):,} orphan actions, "
                             f"{c.get('join_pending', 0):,} pending"))
    return rows

