"""redis-server restarted (append-only file on) under a running trainer: the log source
reports the outage, reconnects with backoff, and the trainer continues with nothing
lost and nothing trained twice."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
import redis

from kraken.train.config import RunConfig, build_run
from kraken.train.trainer import Trainer
from tests.log.helpers import SCHEMA, flush, write


def _yielded(audit) -> list[tuple[int, int]]:
    return [tuple(map(int, s.split(":"))) for f in audit.glob("*.log")
            for line in f.read_text().splitlines() if line.startswith("Y ")
            for s in line.split()[1:]]


def _until(cond, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s} s")
        time.sleep(0.02)


def test_a_server_restart_under_the_trainer_loses_nothing(redis_server, tmp_path, caplog):
    audit = tmp_path / "audit"
    doc = {"log": {"url": redis_server.url, "schema": SCHEMA, "window_s": 10, "block_ms": 50,
                   "consumer": "t", "backoff_s": 0.02, "max_backoff_s": 0.2,
                   "audit": str(audit)},
           "model": {"name": "lr"}, "tables": {"emb": {"dim": 4, "capacity": 5000}},
           "trainer": {"batch_size": 64, "checkpoint_every_s": 0.1, "log_every_s": 0.1}}
    config = RunConfig.from_dict(doc)
    run = build_run(config)
    records: list[dict] = []
    trainer = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                      config=config.trainer, run_dir=tmp_path / "run",
                      on_record=records.append)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(trainer.run()), daemon=True)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with caplog.at_level(logging.WARNING, logger="kraken.data"):
        thread.start()
        try:
            write(client, 1, 200)
            flush(client, 2_000)  # past every window: all 200 are decided
            _until(lambda: trainer.samples >= 200, "samples before")
            redis_server.stop(kill=True)
            _until(lambda: run.stream.outage_s > 0, "outage noticed")
            time.sleep(0.2)  # a few reconnection attempts fail
            redis_server.start()
            client = redis.Redis.from_url(redis_server.url, decode_responses=True)
            write(client, 201, 200, ts0=2_000)
            flush(client, 5_000)
            _until(lambda: trainer.samples >= 400, "samples after")
        finally:
            trainer.request_stop("test over")
            thread.join(30)
            run.ps.close()
    assert outcome, "the trainer did not stop"
    assert outcome[0].samples == 400
    samples = _yielded(audit)
    counts = Counter(samples)
    assert max(counts.values()) == 1
    labels = {r: k for r, k in samples}
    assert sorted(labels) == list(range(1, 401))
    assert all((labels[r] != 0) == (r % 3 == 0) for r in labels)
    assert run.stream.counters["outages"] >= 1 and run.stream.outage_s == 0.0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in text and "back after" in text
    assert any("lag" in r for r in records)
