"""The streams on the real public samples in ../shared/data (skipped when absent).

The data stay outside the repository (licences): see shared/data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kraken.data import (
    AvazuStream,
    CriteoStream,
    MovieLensStream,
    Stream,
    TabularStream,
    validate_batch,
)
from kraken.data.hashing import MISSING_ID
from kraken.table.keys import split_keys
from tests.data.fixtures import malformed_reports

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _need(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def _scan(stream: Stream, batch_size: int = 4096) -> tuple[int, float, list]:
    with malformed_reports() as reports:
        batches = list(stream.batches(batch_size))
    assert reports == []  # the samples are clean
    for b in batches[:2]:
        validate_batch(b, stream.schema)
    return sum(len(b) for b in batches), float(sum(b.label.sum() for b in batches)), batches


def test_criteo_kaggle_head() -> None:
    stream = CriteoStream(_need("criteo/kaggle_head_8k/train.txt"))
    n, positives, batches = _scan(stream, 1000)
    assert (n, positives) == (7200, 1549) and stream.skipped == 0
    assert batches[-1].offset == 7200
    _, ids = split_keys(np.concatenate([b.keys for b in batches]))
    assert ((ids < 2**32) | (ids == MISSING_ID)).all()  # every value is hex: none hashed
    for name, rows, pos in (("dev", 409, 93), ("test", 391, 86)):
        assert _scan(CriteoStream(DATA / f"criteo/kaggle_head_8k/{name}.txt"))[:2] == (rows, pos)


def test_avazu_first_hour() -> None:
    train = AvazuStream(_need("avazu/first_hour_9k/train.csv"))
    dev = AvazuStream(DATA / "avazu/first_hour_9k/dev.csv")
    assert train.has_header and not dev.has_header
    n, clicks, batches = _scan(train)
    assert (n, clicks) == (8087, 1397)
    assert set(np.concatenate([b.event_time for b in batches]).tolist()) == {1413849600}
    assert _scan(dev)[:2] == (480, 86)


def test_criteo_deepctr_sample_as_csv() -> None:
    path = _need("criteo/deepctr_sample/criteo_sample.txt")
    schema = {"label": "label", "categorical": [f"C{i}" for i in range(1, 27)],
              "dense": [f"I{i}" for i in range(1, 14)]}
    n, positives, _ = _scan(TabularStream(path, schema))
    assert (n, positives) == (200, 49)


def test_movielens_100k() -> None:
    stream = MovieLensStream(_need("movielens/ml-100k"), "ml-100k")
    n, _, batches = _scan(stream)
    t = np.concatenate([b.event_time for b in batches])
    assert n == 100_000 and (np.diff(t) >= 0).all()
    assert t[0] == 874724710 and t[-1] == 893286638  # 1997-09-20 .. 1998-04-22
    lengths = np.concatenate([b.jagged["genres"].lengths for b in batches])
    assert lengths.min() >= 1 and lengths.max() == 6


def test_movielens_1m() -> None:
    root = _need("movielens/ml-1m")
    stream = MovieLensStream(root, "ml-1m")
    n, positives, batches = _scan(stream, 65536)
    assert n == 1_000_209 and positives == 575_281 and stream.skipped == 0
    t = np.concatenate([b.event_time for b in batches])
    assert (np.diff(t) >= 0).all()
    _, ids = split_keys(np.concatenate([b.keys[:, :2] for b in batches]))
    assert len(np.unique(ids[:, 0])) == 6040 and len(np.unique(ids[:, 1])) == 3706
