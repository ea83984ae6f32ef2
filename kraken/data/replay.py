"""Replaying a dataset into the event log: impressions plus delayed actions.

Every valid record of a stream becomes an *impression* entry (request id ``rid``,
event time ``ts``, its raw feature columns, see :mod:`kraken.data.raw`); a record
labelled 1 (a click; for MovieLens a rating >= 4) also becomes an *action* entry
``{rid, ts + lag, type}`` with a lag drawn in whole seconds from an exponential
distribution of mean ``lag_mean_s``, clipped to ``[1, lag_max_s]``. Lags are drawn in
record order from one generator seeded with ``seed``, so a replay is reproducible
whatever its chunking. Request ids are ``rid_base + i`` for the ``i``-th record.

Entries go out in event-time order across both streams, to within ``lag_mean_s``: the
impressions are written in pieces of at most that many seconds of event time, and an
action right after the piece in which it falls due (all remaining ones at the end), so a
chunk spanning a day of event time (MovieLens) does not hold its clicks back past the
join window. Each entry
goes to partition ``rid mod partitions``: keys ``{prefix}:impressions:{p}`` and
``{prefix}:actions:{p}``, the format of docs/streaming.md.

Pacing (:class:`Pacer`): ``rate`` entries per second (impressions and actions
together), or ``speedup`` times the dataset's own event-time speed, or as fast as
the server takes them. Entries are written in groups of up to ``pipeline`` entries, one
server call each (a script running the group's XADD commands, :mod:`kraken.data._xadd`;
smaller groups at low rates, so pacing stays smooth); ``maxlen`` caps each stream
(``MAXLEN ~``). The clock and sleep are injected, so the core is
tested without waiting.

A lost connection (the server restarting) is retried with backoff (0.05 s doubling to
2 s) for up to ``reconnect_s`` seconds, and counted in ``ReplayStats.outages``; the
group being written is written again. A group is written whole or not at all, but one
whose reply was lost in the failure appears twice (at least once, never lost): the
joiner counts and drops the duplicate impressions and actions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from kraken.config import check_int, check_number, check_positive
from kraken.data._xadd import GroupWriter
from kraken.data.raw import RawChunk
from kraken.errors import ConfigError, TransportError

__all__ = ["RESERVED", "Entries", "Pacer", "ReplayConfig", "ReplayStats", "log_entries",
           "replay"]

RESERVED = ("rid", "ts", "type")
"""Field names of log entries themselves; a dataset column may not take them."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """What a replay writes and how fast (see the module docstring).

    ``rate`` (entries/s) and ``speedup`` exclude each other; neither: as fast as
    possible. ``limit``: stop after this many impressions. ``maxlen``: approximate
    cap of each stream's length (None: unbounded). ``pipeline``: entries per server
    call. ``reconnect_s``: how long a lost server is waited for.
    """

    prefix: str = "kraken"
    partitions: int = 1
    action: str = "click"
    rate: float | None = None
    speedup: float | None = None
    limit: int | None = None
    lag_mean_s: float = 20.0
    lag_max_s: int = 600
    seed: int = 0
    rid_base: int = 0
    maxlen: int | None = None
    pipeline: int = 1000
    reconnect_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ConfigError(f"prefix: expected a non-empty string, got {self.prefix!r}")
        if not isinstance(self.action, str) or not self.action:
            raise ConfigError(f"action: expected a non-empty string, got {self.action!r}")
        check_int("partitions", self.partitions, lo=1)
        if self.rate is not None and self.speedup is not None:
            raise ConfigError("rate: give either a rate (entries/s) or a speedup, not both")
        if self.rate is not None:
            check_positive("rate", self.rate)
        if self.speedup is not None:
            check_positive("speedup", self.speedup)
        if self.limit is not None:
            check_int("limit", self.limit, lo=0)
        check_positive("lag_mean_s", self.lag_mean_s)
        check_int("lag_max_s", self.lag_max_s, lo=1)
        check_int("seed", self.seed, lo=0)
        check_int("rid_base", self.rid_base, lo=0, hi=(1 << 64) - 1)
        if self.maxlen is not None:
            check_int("maxlen", self.maxlen, lo=1)
        check_int("pipeline", self.pipeline, lo=1)
        check_number("reconnect_s", self.reconnect_s, lo=0.0)


@dataclasses.dataclass(frozen=True)
class Entries:
    """A run of log entries in write order: impressions (``columns`` set) or actions.

    ``rid uint64[n]``, ``ts int64[n]``; ``columns {name: object[n] of str}`` for
    impressions, None for actions.
    """

    rid: np.ndarray
    ts: np.ndarray
    columns: dict[str, np.ndarray] | None

    def __len__(self) -> int:
        return int(self.rid.shape[0])

    def slice(self, a: int, b: int) -> Entries:
        cols = None if self.columns is None else {k: v[a:b] for k, v in self.columns.items()}
        return Entries(self.rid[a:b], self.ts[a:b], cols)


def log_entries(chunks: Iterable[RawChunk], config: ReplayConfig) -> Iterator[Entries]:
    """Impressions and delayed actions of ``chunks``, in event-time write order."""
    rng = np.random.default_rng(config.seed)
    next_rid, left = config.rid_base, config.limit
    held_rid, held_ts = np.empty(0, np.uint64), np.empty(0, np.int64)
    newest = np.iinfo(np.int64).min
    span = max(1, math.ceil(config.lag_mean_s))
    for chunk in chunks:
        taken = sorted(set(chunk.columns) & set(RESERVED))
        if taken:
            raise ConfigError(f"replay.data: column(s) {taken} clash with the log's own "
                              f"fields {list(RESERVED)}; rename them")
        if left is not None:
            if left <= 0:
                break
            if len(chunk) > left:
                chunk = RawChunk({k: v[:left] for k, v in chunk.columns.items()},
                                 chunk.label[:left], chunk.ts[:left])
            left -= len(chunk)
        n = len(chunk)
        if n == 0:
            continue
        rid = np.arange(next_rid, next_rid + n, dtype=np.uint64)
        next_rid += n
        clicked = chunk.label >= 0.5
        lag = np.zeros(n, dtype=np.int64)
        lag[clicked] = np.clip(np.ceil(rng.exponential(config.lag_mean_s, int(clicked.sum()))),
                               1, config.lag_max_s).astype(np.int64)
        # Pieces of at most `span` seconds of event time; the actions due by a piece's end
        # go out right after it (pieces with none due are written together).
        piece = written = 0
        for end in [*(np.flatnonzero(np.diff(chunk.ts // span)) + 1).tolist(), n]:
            took = clicked[piece:end]
            held_rid = np.concatenate([held_rid, rid[piece:end][took]])
            held_ts = np.concatenate([held_ts, (chunk.ts[piece:end] + lag[piece:end])[took]])
            piece = end
            newest_here = max(newest, int(chunk.ts[written:end].max()))
            due = held_ts <= newest_here
            if not due.any() and end < n:
                continue
            yield Entries(rid[written:end], chunk.ts[written:end],
                          {k: v[written:end] for k, v in chunk.columns.items()})
            newest, written = newest_here, end
            if due.any():
                order = np.argsort(held_ts[due], kind="stable")
                yield Entries(held_rid[due][order], held_ts[due][order], None)
                held_rid, held_ts = held_rid[~due], held_ts[~due]
    if held_rid.shape[0]:
        order = np.argsort(held_ts, kind="stable")
        yield Entries(held_rid[order], held_ts[order], None)


class Pacer:
    """Waits before each group of entries so that a replay keeps its rate or speedup.

    ``rate``: the ``k``-th entry is not written before ``start + k / rate``.
    ``speedup``: an entry of event time ``t`` is not written before
    ``start + (t - t0) / speedup`` (``t0``: the first entry's time).
    """

    def __init__(self, rate: float | None, speedup: float | None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.speedup, self.clock, self.sleep = rate, speedup, clock, sleep
        self.start: float | None = None
        self.t0: int | None = None
        self.written = 0

    def group_size(self, pipeline: int) -> int:
        """Entries per write: about 20 groups a second at a low rate, else ``pipeline``."""
        if self.rate is None:
            return pipeline
        return max(1, min(pipeline, int(self.rate / 20)))

    def wait(self, first_ts: int, n: int) -> None:
        """Before writing ``n`` entries, the first of event time ``first_ts``."""
        now = self.clock()
        if self.start is None:
            self.start, self.t0 = now, first_ts
        if self.rate is not None:
            target = self.start + self.written / self.rate
        elif self.speedup is not None:
            target = self.start + (first_ts - (self.t0 or 0)) / self.speedup
        else:
            target = now
        if target > now:
            self.sleep(target - now)
        self.written += n


@dataclasses.dataclass
class ReplayStats:
    """What a replay wrote: entries per stream, seconds it took (wall clock), and how
    many times the connection was lost and found again (``outages``)."""

    impressions: int = 0
    actions: int = 0
    outages: int = 0
    seconds: float = 0.0
    first_ts: int | None = None
    last_ts: int | None = None

    @property
    def rate(self) -> float:
        """Entries written per second."""
        return (self.impressions + self.actions) / self.seconds if self.seconds > 0 else math.inf


def replay(client: Any, chunks: Iterable[RawChunk], config: ReplayConfig, *,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep,
           progress: Callable[[ReplayStats], None] | None = None,
           retry_on: tuple[type[BaseException], ...] | None = None) -> ReplayStats:
    """Write ``chunks`` into the log through ``client`` (a ``redis.Redis``); see the module.

    ``progress(stats)`` is called after each pipelined group. ``retry_on``: the errors
    of a lost connection (default: redis-py's ``ConnectionError`` and ``TimeoutError``);
    past ``reconnect_s`` of failures a :class:`TransportError` is raised.
    """
    if retry_on is None:
        import redis  # noqa: PLC0415 - the log extra; only a replay needs it here
        retry_on = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    pacer = Pacer(config.rate, config.speedup, clock, sleep)
    size = pacer.group_size(config.pipeline)
    stats = ReplayStats()
    begin = clock()
    p = config.partitions
    imp_keys = [f"{config.prefix}:impressions:{i}" for i in range(p)]
    act_keys = [f"{config.prefix}:actions:{i}" for i in range(p)]
    writer = GroupWriter(client, config.maxlen)
    for entries in log_entries(chunks, config):
        for a in range(0, len(entries), size):
            group = entries.slice(a, a + size)
            pacer.wait(int(group.ts[0]), len(group))
            keys = imp_keys if group.columns is not None else act_keys
            _with_retry(functools.partial(_write, writer, group, keys, config.action),
                        retry_on, config.reconnect_s, stats, clock, sleep)
            if group.columns is not None:
                stats.impressions += len(group)
            else:
                stats.actions += len(group)
            lo, hi = int(group.ts.min()), int(group.ts.max())
            stats.first_ts = lo if stats.first_ts is None else min(stats.first_ts, lo)
            stats.last_ts = hi if stats.last_ts is None else max(stats.last_ts, hi)
            stats.seconds = clock() - begin
            if progress is not None:
                progress(stats)
    stats.seconds = clock() - begin
    return stats


def _with_retry(write: Callable[[], None], retry_on: tuple[type[BaseException], ...],
                budget_s: float, stats: ReplayStats, clock: Callable[[], float],
                sleep: Callable[[float], None]) -> None:
    """``write()``, again after each lost connection, backing off, for ``budget_s``."""
    lost_at: float | None = None
    wait = 0.05
    while True:
        try:
            write()
        except retry_on as exc:
            now = clock()
            if lost_at is None:
                lost_at = now
                stats.outages += 1
            if now - lost_at >= budget_s:
                raise TransportError(f"replay: the log server stayed unreachable for "
                                     f"{now - lost_at:.1f} s: {exc}") from exc
            sleep(wait)
            wait = min(2.0 * wait, 2.0)
            continue
        return


def _write(writer: GroupWriter, group: Entries, keys: list[str], action: str) -> None:
    """One server call for ``group`` (see :mod:`kraken.data._xadd`)."""
    rid = list(map(str, group.rid.tolist()))
    ts = list(map(str, group.ts.tolist()))
    part = (group.rid % np.uint64(len(keys))).astype(np.int64).tolist()
    if group.columns is None:
        names, cols = ["rid", "ts", "type"], [rid, ts, [action] * len(rid)]
    else:
        names = ["rid", "ts", *group.columns]
        cols = [rid, ts, *(c.tolist() for c in group.columns.values())]
    writer.write(keys, names, part, cols)
