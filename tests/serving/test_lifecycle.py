"""Services refuse misuse with a named error: started twice, and start again after stop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kraken.errors import LifecycleError
from kraken.serving import DirectoryFollower, Replica
from kraken.serving.http import HttpServer


def test_a_follower_cannot_be_started_twice(tmp_path: Path) -> None:
    follower = DirectoryFollower(Replica(), tmp_path, poll_interval=0.01).start()
    try:
        with pytest.raises(LifecycleError, match="already running"):
            follower.start()
    finally:
        follower.stop()
    follower.start().stop()  # stopped: it may start again


async def _hello(scope, receive, send) -> None:  # noqa: ANN001 - a bare ASGI app
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def test_an_http_server_cannot_be_started_twice() -> None:
    server = HttpServer(_hello).start()
    try:
        assert httpx.get(server.url).text == "hi"
        with pytest.raises(LifecycleError, match="already running"):
            server.start()
        assert httpx.get(server.url).text == "hi"  # the running one is untouched
    finally:
        server.stop()
