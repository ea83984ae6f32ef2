"""The test server itself: it answers, keeps acknowledged entries across a restart."""

from __future__ import annotations

import redis


def test_entries_survive_a_restart(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(5)]
    redis_server.stop(kill=True)
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    assert [e[0] for e in client.xrange("s")] == ids
