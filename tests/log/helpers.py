"""Writing a small event log and reading it back, for the tests of the log source."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import redis

from kraken.data.base import Batch
from kraken.data.logconfig import LogConfig
from kraken.data.redislog import RedisLogStream

SCHEMA = {"categorical": ["uid", "user", "item"], "multi_valued": ["tags"], "dense": ["price"]}
WINDOW_S = 10


def config(url: str, **kw) -> LogConfig:
    base = {"url": url, "schema": SCHEMA, "window_s": WINDOW_S, "block_ms": 50,
            "consumer": "trainer-a", "backoff_s": 0.02, "max_backoff_s": 0.2}
    return LogConfig.from_dict({**base, **kw})


def open_log(url: str, **kw) -> RedisLogStream:
    return RedisLogStream(config(url, **kw))


def impression(rid: int, ts: int) -> dict[str, str]:
    """The raw fields of impression ``rid``: ``uid`` repeats the request id, so a sample
    names its impression (its field-0 ID is the rid)."""
    return {"rid": str(rid), "ts": str(ts), "uid": str(rid), "user": f"u{rid % 7}",
            "item": str(rid % 11), "tags": "a|b" if rid % 2 else "", "price": f"{rid % 5}.5"}


def write(client: redis.Redis, first: int, n: int, *, clicked=lambda rid: rid % 3 == 0,
          prefix: str = "kraken", partitions: int = 1, ts0: int = 1_000,
          maxlen: int | None = None) -> list[int]:
    """Impressions ``first .. first+n-1`` (ts = ts0 + rid) and a click 2 s after each
    clicked one, in event-time order; returns the rids written."""
    pipe = client.pipeline(transaction=False)
    events = []
    for rid in range(first, first + n):
        events.append((ts0 + rid, 0, rid))
        if clicked(rid):
            events.append((ts0 + rid + 2, 1, rid))
    for ts, kind, rid in sorted(events):
        p = rid % partitions
        if kind == 0:
            pipe.xadd(f"{prefix}:impressions:{p}", impression(rid, ts0 + rid), maxlen=maxlen,
                      approximate=False)
        else:
            pipe.xadd(f"{prefix}:actions:{p}", {"rid": str(rid), "ts": str(ts),
                                                 "type": "click"})
    pipe.execute()
    return list(range(first, first + n))


def flush(client: redis.Redis, ts: int, prefix: str = "kraken", partitions: int = 1) -> None:
    """An action far in event time on every partition: every pending impression expires."""
    for p in range(partitions):
        client.xadd(f"{prefix}:actions:{p}", {"rid": "0", "ts": str(ts), "type": "click"})


def take(batches: Iterator[Batch], n: int, timeout_s: float = 10.0) -> list[Batch]:
    """Batches until ``n`` samples came (or fail after ``timeout_s`` of no progress)."""
    out, got = [], 0
    deadline = time.monotonic() + timeout_s
    while got < n:
        b = next(batches)
        if len(b):
            out.append(b)
            got += len(b)
            deadline = time.monotonic() + timeout_s
        assert time.monotonic() < deadline, f"only {got} of {n} samples came"
    return out


def rids_labels(batches: list[Batch]) -> list[tuple[int, int]]:
    """(request id, label) of every sample: field 0 holds the request id."""
    from kraken.table.keys import ID_BITS

    mask = (1 << ID_BITS) - 1
    return [(int(k) & mask, int(y)) for b in batches
            for k, y in zip(b.keys[:, 0], b.label, strict=True)]


def expected(rids: list[int], clicked=lambda rid: rid % 3 == 0) -> list[tuple[int, int]]:
    return [(r, int(clicked(r))) for r in rids]


def ids_of(arr: np.ndarray) -> list[int]:
    return [int(x) for x in arr]
