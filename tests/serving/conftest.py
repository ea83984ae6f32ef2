"""A running server (uvicorn on 127.0.0.1, a free port) over a replica of a small trained model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kraken.serving import DirectoryFollower, Replica, create_app
from kraken.serving.http import HttpServer
from tests.serving.helpers import publishing_trainer


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model_dir = tmp_path_factory.mktemp("served")
    tr, _ = publishing_trainer(model_dir, n_records=2000)
    tr.run()
    replica = Replica()
    DirectoryFollower(replica, model_dir).poll()
    server = HttpServer(create_app(replica, max_body_bytes=64_000, max_instances=64)).start()
    try:
        yield {"url": server.url, "replica": replica}
    finally:
        server.stop()
