"""``kraken demo --realtime``: online training from a live event log, served as it learns.

Four parts run together until Ctrl-C, SIGTERM or ``--seconds``::

    redis-server        a local one in the run's temporary directory (or --redis-url)
        ^  XADD         replayer (a thread, kraken.data.replay): the synthetic stream or
        |               MovieLens-1M as impressions plus delayed clicks, --rate entries/s
        |  XREADGROUP   the trainer reads the log ([log] of the run file), joins each
        |               impression with its clicks (window_s), learns, checkpoints
        v  versions     every second into the run's model/ directory
    prediction server   a replica following that directory, POST /v1/predict on 127.0.0.1

The run file is ``examples/realtime.toml`` (:data:`REALTIME_RUN`, its schema replaced by
the replayed columns), or ``--config`` (which must read those columns); the demo points
its ``[log] url`` at the server it uses. On another server (``--redis-url``) the keys get
a prefix of their own for this run, deleted at the end.

One progress line a second shows the trainer's samples, window AUC and consumer lag
(``lag E entries S s``: entries written but not yet read at the reader's last read, and
how long the oldest had waited), then ``in R ev/s`` (entries the replayer wrote over the
last second), ``event->served A s`` (how much earlier than the newest event written
the newest event trained into the served version was written, wall-clock seconds) and
the served version. Stopping lets the trainer train what it read, write its checkpoint
(the log's position in it, then ``XACK``) and a last version; then the replayer, the
prediction server and redis-server stop, in that order.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import dataclasses
import itertools
import math
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kraken.cli.train import train_and_report
from kraken.config import build_dataclass, read_config_file
from kraken.data import open_stream
from kraken.data.base import Stream
from kraken.data.logconfig import LogConfig, LogSchema
from kraken.data.raw import RawChunk, raw_chunks, raw_layout
from kraken.data.redis_server import RedisServer
from kraken.data.replay import ReplayConfig, ReplayStats, replay
from kraken.errors import ConfigError, TransportError
from kraken.train.config import RunConfig
from kraken.train.trainer import Trainer

__all__ = ["REALTIME_RUN", "add_arguments", "by_event_time", "realtime_run", "run_realtime"]

REALTIME_RUN: dict[str, Any] = {
    "log": {"url": "redis://127.0.0.1:6379/0", "prefix": "kraken", "partitions": 1,
            "block_ms": 100, "window_s": 60, "label_actions": ["click"],
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
"""The demo's run file, as ``examples/realtime.toml`` writes it (the schema: the columns
``kraken replay`` writes for the synthetic stream, ``c0..c7`` categorical, ``d0..d3``
dense)."""

_WRITTEN_EVERY_S = 0.02  # write times remembered at most this often ...
_WRITTEN_KEPT = 200_000  # ... and this many (over an hour at the finest)


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


def realtime_run(url: str, config: str | None = None, prefix: str | None = None,
                 schema: dict[str, Any] | None = None, window_s: int | None = None,
                 ) -> dict[str, Any]:
    """The run file's document (``config`` or :data:`REALTIME_RUN`) with ``[log] url``
    set to ``url`` (and ``prefix`` when given). ``schema``: the columns the replayer
    writes; the default run takes them, a ``config`` must read exactly those.
    ``window_s``: the default run's join window instead of its own."""
    doc = read_config_file(Path(config)) if config else copy.deepcopy(REALTIME_RUN)
    if window_s is not None and not config:
        doc["log"]["window_s"] = window_s
    where = f"{config}: " if config else ""
    if not isinstance(doc.get("log"), dict):
        raise ConfigError(f"{where}log: the real-time demo needs a [log] section")
    log = {**doc["log"], "url": url, **({"prefix": prefix} if prefix else {})}
    if schema is not None:
        if not config:
            log["schema"] = schema
        else:
            have = LogConfig.from_dict(log).schema
            want = build_dataclass(LogSchema, dict(schema), "schema")
            if have.columns != want.columns:
                raise ConfigError(f"{where}log.schema: the replayed data has the columns "
                                  f"{schema}; the run reads {list(have.columns)}")
    doc["log"] = log
    return doc


def demo_source(data: str, data_dir: str) -> Stream:
    """What the demo replays: the endless synthetic stream, or MovieLens-1M."""
    if data == "synthetic":
        return open_stream("synthetic", n_records=None, vocab=200_000)
    return open_stream("movielens-1m", root=data_dir)


@contextmanager
def _log_server(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """``(url, prefix of this run or None)``: a redis-server started here, or theirs."""
    if args.redis_url:
        import redis  # noqa: PLC0415 - the log's client, only for --realtime

        client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2.0)
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:
            raise TransportError(f"--redis-url: cannot reach {args.redis_url}: {exc}"
                                 ) from None
        finally:
            client.close()
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
            source = demo_source(args.data, args.data_dir)
            # MovieLens: a rating every ~20 s of event time on average; an hour's window
            window = 3600 if args.data == "movielens-1m" else None
            doc = realtime_run(url, args.config, prefix, raw_layout(source).to_dict(), window)
            config = RunConfig.from_dict(doc)
            log = LogConfig.from_dict(doc["log"])
            if prefix is not None:
                stack.callback(_delete_keys, log)
            _realtime(config, log, source, run_dir, args)
    except KeyboardInterrupt:  # Ctrl-C before or after training: everything was stopped
        print("kraken demo --realtime: interrupted")
        return 130
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


def by_event_time(chunks: Iterable[RawChunk], span_s: int) -> Iterator[RawChunk]:
    """``chunks`` cut wherever ``ts // span_s`` changes: each spans under ``span_s``
    seconds of event time.

    The replay writes the actions that fell due during a chunk after the whole chunk,
    so an action can trail its own event time by a chunk's span: cut to a tenth of the
    join window, it still lands inside the window of its impression (MovieLens' chunks
    of 4096 ratings can span a day of event time, closing every window first)."""
    for chunk in chunks:
        cuts = np.flatnonzero(np.diff(chunk.ts // span_s)) + 1
        if cuts.shape[0] == 0:
            yield chunk
            continue
        bounds = np.concatenate([[0], cuts, [len(chunk)]]).tolist()
        for a, b in itertools.pairwise(bounds):
            yield RawChunk({k: v[a:b] for k, v in chunk.columns.items()},
                           chunk.label[a:b], chunk.ts[a:b])


class _Replayer:
    """:func:`kraken.data.replay.replay` of ``chunks`` in a daemon thread, stopped between
    two pipelined groups; remembers when each group's newest event time was written."""

    def __init__(self, url: str, chunks: Iterator[Any], config: ReplayConfig) -> None:
        self.url, self.chunks, self.config = url, chunks, config
        self.stats = ReplayStats()
        self.error: BaseException | None = None
        self._written: list[tuple[int, float, int]] = []  # (newest ts, wall time, entries)
        self._trimmed = False
        self._last: tuple[int, float, int] = (0, 0.0, 0)  # the newest, remembered or not
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kraken-replay", daemon=True)

    def start(self) -> _Replayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def rate(self) -> float:
        """Entries written per second over the last second (0 when idle)."""
        now = time.time()
        recent = [(w, n) for _, w, n in [*self._written[-60:], self._last] if now - w <= 1.0]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 0.25)
        return (recent[-1][1] - recent[0][1]) / span

    def written_at(self, ts: int) -> float | None:
        """Wall time at which events of time ``ts`` were written (the first group whose
        newest event time reached it), or None if none was or it is no longer known."""
        written = self._written
        i = bisect.bisect_left(written, (ts, -math.inf, 0))
        if i == len(written):
            return self._last[1] if self._last[2] and self._last[0] >= ts else None
        return None if i == 0 and self._trimmed else written[i][1]

    def _progress(self, s: ReplayStats) -> None:
        self.stats = dataclasses.replace(s)
        now = time.time()
        newest = max(s.last_ts or 0, self._last[0])
        self._last = (newest, now, s.impressions + s.actions)
        if not self._written or now - self._written[-1][1] >= _WRITTEN_EVERY_S:
            self._written.append(self._last)
        if len(self._written) > _WRITTEN_KEPT:
            self._written = self._written[_WRITTEN_KEPT // 2:]
            self._trimmed = True
        if self._stop.is_set():
            raise _Stopped

    def _run(self) -> None:
        import redis  # noqa: PLC0415 - the log's client, only for --realtime

        client = redis.Redis.from_url(self.url)
        try:
            replay(client, self.chunks, self.config, progress=self._progress)
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 - shown on the progress line and summary
            self.error = exc
        finally:
            client.close()


class _Stopped(Exception):
    """Ends the replayer's thread between two groups."""


def _realtime(config: RunConfig, log: LogConfig, source: Stream, run_dir: Path,
              args: argparse.Namespace) -> None:
    from kraken.cli.demo import serving  # noqa: PLC0415 - FastAPI only when serving

    replay_config = ReplayConfig(prefix=log.prefix, partitions=log.partitions,
                                 action=log.label_actions[0], rate=args.rate,
                                 maxlen=2_000_000 if args.redis_url else None)
    chunks = by_event_time(raw_chunks(source), max(1, log.window_s // 10))
    replayer = _Replayer(log.url, chunks, replay_config)
    model_dir = run_dir / "model"
    trainer: list[Trainer] = []

    def age() -> str:
        """Event -> served: how much older than the newest event written is the newest
        event trained into the served version, in wall-clock seconds."""
        served = replica.max_event_time
        at = replayer.written_at(served)
        newest = replayer.written_at(replayer.stats.last_ts or 0)
        if at is None or newest is None:
            return "-"
        return f"{max(0.0, newest - at):.1f}s"

    def lag() -> dict[str, float] | None:
        log = trainer[0].log if trainer else None
        return log.lag() if log is not None else None

    with serving(model_dir, args.port, lag) as (replica, summary):
        replayer.start()
        print(f"replaying {args.data} into {log.prefix}:impressions:* and "
              f"{log.prefix}:actions:* at {args.rate:,.0f} events/s")

        def status() -> str:
            line = f"in {replayer.rate():,.0f} ev/s"
            if replayer.error is not None:
                line += f" (replay failed: {replayer.error})"
            elif replayer.done:
                line += " (replay done)"
            if not replica.ready:
                return line + "  serve: waiting"
            return f"{line}  event->served {age()}  serve v{replica.version}"

        def closing() -> list[tuple[str, str]]:
            replayer.stop()
            s = replayer.stats
            rows = [("events written", f"{s.impressions + s.actions:,} ({s.impressions:,} "
                                       f"impressions, {s.actions:,} actions) in "
                                       f"{s.seconds:.1f}s, {s.rate:,.0f}/s")]
            if replayer.error is not None:
                rows.append(("replay error", str(replayer.error)))
            if trainer:
                rows += _log_rows(trainer[0], s.impressions + s.actions)
            rows += summary()
            if replica.ready:
                rows.append(("event->served", f"{age()} (newest event written - newest "
                                              f"event in the served version, wall clock)"))
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
            replayer.stop()


def _log_rows(trainer: Trainer, written: int) -> list[tuple[str, str]]:
    """Summary rows of the log the trainer read; ``written``: entries the replayer wrote."""
    log = trainer.log
    if log is None:
        return []
    c: dict[str, int] = dict(getattr(log, "counters", {}))
    lag = log.lag()
    rows = [("consumer lag", f"{lag['entries']:,.0f} entries, {lag['seconds']:.1f}s at the "
                             f"trainer's last read (written, not yet read)")]
    if c:
        read = c.get("entries", 0)
        rows.append(("log read", f"{read:,} entries ({max(0, written - read):,} written "
                                 f"after the last read stay in the log), "
                                 f"{c.get('malformed', 0):,} malformed, "
                                 f"{c.get('lost', 0):,} lost to trimming, "
                                 f"{c.get('outages', 0):,} outage(s)"))
        rows.append(("join", f"{c.get('join_positives', 0):,} positives, "
                             f"{c.get('join_negatives', 0):,} negatives, "
                             f"{c.get('join_corrections', 0):,} corrections, "
                             f"{c.get('join_orphan_actions', 0):,} orphan actions, "
                             f"{c.get('join_pending', 0):,} pending"))
    return rows
