"""Fixtures for tests against a real redis-server (see tests/redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test, stopped afterwards even when the test fails."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
