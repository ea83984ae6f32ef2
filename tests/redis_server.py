"""A real ``redis-server`` for tests (:class:`kraken.data.redis_server.RedisServer`):
on a free port in a temporary directory, append-only file on, always stopped.

Tests that need it use the ``redis_server`` fixture (tests/log/conftest.py). Without the
binary they skip with the install command, except under ``CI=true``, where a missing
server fails the run instead of passing silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kraken.data.redis_server import INSTALL, redis_server_binary
from kraken.data.redis_server import RedisServer as _RedisServer

__all__ = ["RedisServer", "require_redis_server"]


def require_redis_server() -> str:
    """The redis-server binary's path; skips (fails under CI=true) when it is missing."""
    path = redis_server_binary()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL)
        pytest.skip(INSTALL)
    return path


class RedisServer(_RedisServer):
    """The library's server, skipping the test (failing it under CI=true) without one."""

    def __init__(self, directory: Path, binary: str | None = None, port: int = 0) -> None:
        super().__init__(directory, binary or require_redis_server(), port)
