"""The trainer over a stream whose position is a state (LogStream): a checkpoint holds
exactly the batches trained although the reader reads ahead; commit follows the save;
idle (empty) batches; impressions scored when first seen and that score evaluated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kraken.data.base import Batch, LogStream
from kraken.train import Trainer
from tests.train.helpers import make_trainer


class ListLog:
    """A log held in memory: the records of a finite stream, read in batches of up to
    ``batch_size`` with an empty batch (idle) after every third one.

    Its position is the index of the next record, a state as a log's would be. Each
    batch brings the next batch's records as ``fresh`` impressions, so every record is
    scored (``scored``) one batch before it is trained; ``prior`` returns that score, or
    the label itself with ``prior_is_label`` (a perfect prior)."""

    def __init__(self, source, n: int, prior_is_label: bool = False) -> None:
        whole = next(source.batches(n))
        self.records, self.schema, self.source = whole, source.schema, source
        self.n = n
        self.next = 0
        self.prior_is_label = prior_is_label
        self.scores = np.full(n, np.nan, dtype=np.float32)
        self.commits: list[int] = []
        self.read_to = 0
        self.fresh_from: dict[int, int] = {}

    @property
    def features(self):
        return self.source.features

    @property
    def skipped(self) -> int:
        return 0

    def _slice(self, a: int, b: int) -> Batch:
        return self.records.slice(a, b)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        assert start == 0
        k = 0
        while self.next < self.n:
            a, b = self.next, min(self.next + batch_size, self.n)
            part = self._slice(a, b)
            fresh = self._slice(b, min(b + batch_size, self.n))
            self.fresh_from[id(fresh)] = b
            prior = part.label.copy() if self.prior_is_label else self.scores[a:b].copy()
            self.next = b
            self.read_to = b
            yield Batch(keys=part.keys, dense=part.dense, label=part.label,
                        event_time=part.event_time, offset=b, prior=prior, fresh=fresh)
            k += 1
            if k % 3 == 0:
                yield Batch(keys=part.keys[:0], dense=part.dense[:0], label=part.label[:0],
                            event_time=part.event_time[:0], offset=b)

    def position(self) -> dict[str, np.ndarray]:
        return {"next": np.array([self.next], dtype=np.int64), "scores": self.scores.copy()}

    def seek(self, state: dict[str, np.ndarray]) -> None:
        self.next = int(state["next"][0])
        self.scores = state["scores"].copy()

    def commit(self, state: dict[str, np.ndarray]) -> None:
        self.commits.append(int(state["next"][0]))

    def scored(self, fresh: Batch, probability: np.ndarray) -> None:
        a = self.fresh_from.pop(id(fresh))
        assert probability.dtype == np.float32 and probability.shape == (len(fresh),)
        self.scores[a:a + len(fresh)] = probability

    def lag(self) -> dict[str, float]:
        return {"entries": float(self.n - self.next), "seconds": 0.0}


def _trainer(run_dir: Path | None, n: int = 6000, **kw) -> tuple[Trainer, ListLog]:
    tr = make_trainer(run_dir, n_records=n, batch_size=256, prefetch=4, **kw)
    log = ListLog(tr.stream, n)
    tr.stream = tr.log = log  # type: ignore[assignment]
    return tr, log  # type: ignore[return-value]


def test_list_log_is_a_log_stream() -> None:
    tr, log = _trainer(None)
    assert isinstance(log, LogStream)


@pytest.mark.parametrize("pipeline", [False, True])
def test_each_checkpoint_holds_exactly_the_records_trained(tmp_path: Path, pipeline) -> None:
    tr, log = _trainer(tmp_path, checkpoint_every_samples=700, pipeline=pipeline)
    at_commit: list[tuple[int, int]] = []
    commit = log.commit

    def checked_commit(state):
        at_commit.append((int(state["next"][0]), tr.samples))
        commit(state)

    log.commit = checked_commit  # type: ignore[method-assign]
    s = tr.run()
    assert s.samples == 6000
    assert len(at_commit) >= 4  # due every ~3 batches, saved once the reader is quiet
    assert all(pos == trained for pos, trained in at_commit), at_commit
    assert log.read_to == 6000


def test_stop_resume_trains_every_record_once(tmp_path: Path) -> None:
    tr, log = _trainer(tmp_path, checkpoint_every_samples=1000, log_every_s=1e-9)
    tr.on_record = lambda rec: rec["samples"] >= 2500 and tr.request_stop("test")
    first = tr.run()
    assert first.stopped == "test" and 2500 <= first.samples < 6000
    # the stop came with the reader ahead; what it had read was trained before the end
    assert first.samples - 2500 > 256
    assert log.read_to == log.commits[-1] == first.samples
    tr2, log2 = _trainer(tmp_path)
    assert tr2.resume()
    assert log2.next == first.samples
    second = tr2.run()
    assert second.samples == 6000
    assert np.isfinite(log2.scores[first.samples:]).all()


def test_empty_batches_train_nothing(tmp_path: Path) -> None:
    tr, log = _trainer(None)
    s = tr.run()
    assert s.samples == 6000 and s.batches == -(-6000 // 256)
    assert tr.nonfinite_batches == 0


def test_impressions_are_scored_when_first_seen_and_that_score_is_evaluated() -> None:
    tr, log = _trainer(None)
    tr.run()
    # every record but the first batch's was scored as a fresh impression
    assert np.isfinite(log.scores[256:]).all() and np.isnan(log.scores[:256]).all()
    assert ((log.scores[256:] > 0) & (log.scores[256:] < 1)).all()
    perfect, _ = _trainer(None)
    perfect.stream.prior_is_label = True  # type: ignore[attr-defined]
    s = perfect.run()
    assert s.metrics["auc"] > 0.99  # the prior (here: the label) is what was scored
    assert tr.cumulative.get()["auc"] < 0.9
