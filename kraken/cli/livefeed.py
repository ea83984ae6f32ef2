"""``LiveFeed``: a paced producer of impressions and delayed clicks, for the real-time demo
and the latency benchmark.

It writes the seeded synthetic stream (:mod:`kraken.data.synthetic`) into an event log
on Redis Streams in the format of :mod:`kraken.data.logconfig`, as events happening
now: every record becomes an impression stamped with the wall clock (``ts``, integer
unix seconds); a record whose hidden label is 1 also becomes a ``click`` written
``delay`` seconds later, ``delay`` drawn from an exponential of mean ``click_delay_s``
(so some clicks arrive after the join window and are trained as corrections)::

    t            impression rid=41 ts=t  c0..c{F-1} = raw IDs, d0..d{D-1} = dense values
    t + delay    action     rid=41 ts=t+delay type=click      (only when label = 1)

Pacing: every ``tick_s`` the feed writes the events due since it started, ``rate``
events per second (impressions and clicks together; clicks due by their time go first,
impressions fill the rest), in one pipelined round trip. When the server or this
process cannot keep up, the achieved rate (``stats``) falls below ``rate`` rather than
bursting later: at most one second's worth is written per tick.

Request ids count up from ``first_rid``; an impression and its click share the partition
``rid mod partitions``. Per-entry field dictionaries are built in Python: that is what
redis-py's ``XADD`` takes, and it costs the producer, not the trainer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis

from kraken.data.logconfig import LogConfig
from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.errors import ConfigError
from kraken.table.keys import ID_BITS

__all__ = ["FeedStats", "LiveFeed", "feed_schema"]

_ID_MASK = np.int64((1 << ID_BITS) - 1)


def feed_schema(n_fields: int, n_dense: int) -> dict[str, list[str]]:
    """The ``[log.schema]`` of the feed's impressions: ``c0..`` categorical, ``d0..`` dense."""
    return {"categorical": [f"c{i}" for i in range(n_fields)],
            "dense": [f"d{i}" for i in range(n_dense)]}


@dataclasses.dataclass(frozen=True)
class FeedStats:
    """What the feed wrote so far: ``impressions``, ``clicks`` (entries), ``seconds``
    since it started, ``rate`` (events/s over the last second or so), ``newest_ts``
    (event time of the newest entry written, unix seconds; 0 before the first)."""

    impressions: int
    clicks: int
    seconds: float
    rate: float
    newest_ts: int

    @property
    def events(self) -> int:
        return self.impressions + self.clicks


class LiveFeed:
    """Writes the synthetic stream into the log of ``log`` at ``rate`` events/s, in a
    background thread (:meth:`start` / :meth:`stop`) or by :meth:`run` on the caller's.

    ``synthetic``: the stream's shape; its ``n_fields``/``n_dense`` must match the log's
    schema (``c0..``, ``d0..``, see :func:`feed_schema`). ``maxlen``: approximate
    ``MAXLEN`` of every key (None: never trimmed).
    """

    def __init__(self, log: LogConfig, rate: float, *, synthetic: SyntheticConfig | None = None,
                 click_delay_s: float = 2.0, tick_s: float = 0.02, maxlen: int | None = None,
                 first_rid: int = 1, seed: int = 0) -> None:
        if not rate > 0:
            raise ConfigError(f"rate: expected events/s > 0, got {rate}")
        if not click_delay_s >= 0:
            raise ConfigError(f"click_delay_s: expected seconds >= 0, got {click_delay_s}")
        self.log = log
        self.synthetic = synthetic or SyntheticConfig(n_records=None, seed=seed)
        want = feed_schema(self.synthetic.n_fields, self.synthetic.n_dense)
        have = log.schema
        if list(have.categorical) != want["categorical"] or list(have.dense) != want["dense"]:
            raise ConfigError(f"log.schema: the synthetic feed writes {want}, the log's "
                              f"schema is categorical={list(have.categorical)} "
                              f"dense={list(have.dense)}")
        if "click" not in log.action_types:
            raise ConfigError(f"log.action_types: the feed writes 'click' actions, not one "
                              f"of {list(log.action_types)}")
        self.rate = float(rate)
        self.click_delay_s = float(click_delay_s)
        self.tick_s = float(tick_s)
        self.maxlen = maxlen
        self._rng = np.random.default_rng([seed, 7])
        self._records: Iterator[Any] = SyntheticStream(self.synthetic).batches(1024)
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._next_rid = int(first_rid)
        self._clicks_at = np.zeros(0, np.float64)  # pending clicks: due wall time, rid
        self._clicks_rid = np.zeros(0, np.int64)
        self._imp = self._clk = 0
        self._newest_ts = 0
        self._t0 = 0.0
        self._recent: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- control --------------------------------------------------------------------------

    def start(self) -> LiveFeed:
        """Write in a daemon thread until :meth:`stop`; a failure stops it (``error``)."""
        self._thread = threading.Thread(target=self._run_noting, name="kraken-feed",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def run(self, seconds: float | None = None) -> FeedStats:
        """Write on this thread for ``seconds`` (None: until :meth:`stop`)."""
        client = redis.Redis.from_url(self.log.url, decode_responses=True)
        try:
            self._t0 = time.monotonic()
            end = None if seconds is None else self._t0 + seconds
            while not self._stop.wait(self.tick_s):
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                due = int(self.rate * (now - self._t0)) - (self._imp + self._clk)
                if due > 0:
                    self._write(client, min(due, max(1, int(self.rate))))
        finally:
            client.close()
        return self.stats()

    def stats(self) -> FeedStats:
        now = time.monotonic()
        recent = [(t, n) for t, n in self._recent if now - t <= 1.0]
        rate = 0.0
        if len(recent) >= 2:
            rate = (recent[-1][1] - recent[0][1]) / max(recent[-1][0] - recent[0][0], 1e-9)
        return FeedStats(impressions=self._imp, clicks=self._clk,
                         seconds=now - self._t0 if self._t0 else 0.0, rate=rate,
                         newest_ts=self._newest_ts)

    # -- writing --------------------------------------------------------------------------

    def _run_noting(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the demo, not lost
            self.error = exc

    def _take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` synthetic records: raw IDs int64[n, F], dense float32[n, D],
        label float32[n]."""
        got = sum(len(b[2]) for b in self._buffer)
        while got < n:
            b = next(self._records)
            self._buffer.append((b.keys & _ID_MASK, b.dense, b.label))
            got += len(b)
        ids, dense, label = (np.concatenate(x) for x in zip(*self._buffer, strict=True))
        self._buffer = [(ids[n:], dense[n:], label[n:])] if got > n else []
        return ids[:n], dense[:n], label[:n]

    def _write(self, client: redis.Redis, due: int) -> None:
        wall = time.time()
        now_ts = int(wall)
        ready = np.flatnonzero(self._clicks_at <= wall)[:due]
        ready = ready[np.argsort(self._clicks_at[ready], kind="stable")]
        click_rid, click_at = self._clicks_rid[ready], self._clicks_at[ready]
        keep = np.ones(self._clicks_at.shape[0], bool)
        keep[ready] = False
        self._clicks_at, self._clicks_rid = self._clicks_at[keep], self._clicks_rid[keep]
        n = due - ready.shape[0]
        ids, dense, label = self._take(n)
        rid = np.arange(self._next_rid, self._next_rid + n, dtype=np.int64)
        self._next_rid += n
        clicked = label > 0.5
        delay = self._rng.exponential(self.click_delay_s, int(clicked.sum()))
        self._clicks_at = np.concatenate([self._clicks_at, wall + delay])
        self._clicks_rid = np.concatenate([self._clicks_rid, rid[clicked]])

        log, parts = self.log, self.log.partitions
        cat, den = self.log.schema.categorical, self.log.schema.dense
        ids_s = ids.astype(str)
        dense_s = np.char.mod("%.4g", dense) if dense.size else np.zeros((n, 0), str)
        ts_s = str(now_ts)
        pipe = client.pipeline(transaction=False)
        for r, t in zip(click_rid.tolist(), click_at.tolist(), strict=True):
            pipe.xadd(log.actions_key(r % parts), {"rid": r, "ts": int(t), "type": "click"},
                      maxlen=self.maxlen, approximate=True)
        for i, r in enumerate(rid.tolist()):
            fields = {"rid": r, "ts": ts_s}
            fields.update(zip(cat, ids_s[i].tolist(), strict=True))
            fields.update(zip(den, dense_s[i].tolist(), strict=True))
            pipe.xadd(log.impressions_key(r % parts), fields, maxlen=self.maxlen,
                      approximate=True)
        pipe.execute()
        self._imp += n
        self._clk += ready.shape[0]
        self._newest_ts = max(self._newest_ts, now_ts,
                              int(click_at.max()) if click_at.size else 0)
        self._recent.append((time.monotonic(), self._imp + self._clk))
        if len(self._recent) > 200:
            self._recent = self._recent[-100:]
