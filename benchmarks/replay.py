#!/usr/bin/env python
"""Write speed of ``kraken replay``'s core: entries per second into a local redis-server.

Starts a redis-server (append-only file, ``appendfsync always``) in a temporary folder,
replays ``--records`` synthetic records (8 categorical + 4 dense columns, ~30 % clicked)
as fast as the server takes them, and prints entries (impressions + actions) per second.

    python benchmarks/replay.py [--records 50000] [--pipeline 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import redis

from kraken.data import SyntheticConfig, SyntheticStream
from kraken.data.raw import raw_chunks
from kraken.data.redis_server import RedisServer
from kraken.data.replay import ReplayConfig, replay


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--pipeline", type=int, default=1000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d, RedisServer(d) as server:
        client = redis.Redis.from_url(server.url)
        stream = SyntheticStream(SyntheticConfig(n_records=a.records))
        t0 = time.perf_counter()
        stats = replay(client, raw_chunks(stream), ReplayConfig(pipeline=a.pipeline))
        dt = time.perf_counter() - t0
        client.close()
    n = stats.impressions + stats.actions
    print(f"{n / dt:,.0f} entries/s ({stats.impressions} impressions, {stats.actions} "
          f"actions in {dt:.2f} s)")


if __name__ == "__main__":
    main()
