"""The Stream contract, checked for every stream on small synthetic files.

Small ``block_bytes`` make the file streams cross many block boundaries.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.data import (
    AvazuStream,
    CriteoStream,
    MovieLensStream,
    Stream,
    SyntheticConfig,
    SyntheticStream,
    TabularStream,
    validate_batch,
)
from kraken.errors import InputError
from tests.data.fixtures import (
    AVAZU_HEADER,
    assert_same_rows,
    avazu_lines,
    criteo_lines,
    malformed_reports,
    movielens_tables,
    write_lines,
    write_ml1m,
    write_ml100k,
)

N = 120


def _with_bad_lines(lines: list[str], bad: str) -> list[str]:
    out = list(lines)
    for i in (5, 37, 38, len(out)):
        out.insert(i, bad)
    return out


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[], Stream]]:
    d = tmp_path_factory.mktemp("contract")
    crit = write_lines(d / "c.txt", _with_bad_lines(criteo_lines(N), "1\t2\t3"))
    ava = write_lines(d / "a.csv", [AVAZU_HEADER, *_with_bad_lines(avazu_lines(N), "x,y")])
    tables = movielens_tables(N)
    ml1m, ml100k = write_ml1m(d / "ml-1m", tables), write_ml100k(d / "ml-100k", tables)
    csv = write_lines(d / "t.csv", ["y,a,b,tags,x"] + _with_bad_lines(
        [f"{i % 2},{i % 7},\"v,{i % 5}\",t{i % 3}|t{i % 4},{i * 0.5}" for i in range(N)], "1,2"))
    schema = {"label": "y", "categorical": ["a", "b"], "multi_valued": ["tags"], "dense": ["x"]}
    return {
        "synthetic": lambda: SyntheticStream(SyntheticConfig(n_records=N, n_fields=3, vocab=50)),
        "criteo": lambda: CriteoStream(crit, block_bytes=5000),
        "avazu": lambda: AvazuStream(ava, block_bytes=3000),
        "ml-1m": lambda: MovieLensStream(ml1m, "ml-1m"),
        "ml-100k": lambda: MovieLensStream(ml100k, "ml-100k"),
        "csv": lambda: TabularStream(csv, schema, block_bytes=600),
    }


NAMES = ["synthetic", "criteo", "avazu", "ml-1m", "ml-100k", "csv"]


def _all(stream: Stream, batch_size: int, start: int = 0) -> list:
    return list(stream.batches(batch_size, start))


@pytest.mark.parametrize("name", NAMES)
def test_batches_fit_the_schema(streams: dict, name: str) -> None:
    stream = streams[name]()
    assert isinstance(stream, Stream)
    batches = _all(stream, 16)
    assert sum(len(b) for b in batches) == N
    assert all(len(b) == 16 for b in batches[:-1]) and 0 < len(batches[-1]) <= 16
    for b in batches:
        validate_batch(b, stream.schema)
    offsets = [b.offset for b in batches]
    assert offsets == sorted(set(offsets))
    expected_skipped = 0 if name in ("synthetic", "ml-1m", "ml-100k") else 4
    assert stream.skipped == expected_skipped
    assert offsets[-1] == N + expected_skipped  # trailing bad line consumed by the last batch


@pytest.mark.parametrize("name", NAMES)
@given(batch_size=st.integers(1, 50), cut=st.integers(0, 200))
def test_resume_from_offset_continues_exactly(streams: dict, name: str, batch_size: int,
                                              cut: int) -> None:
    stream = streams[name]()
    whole = _all(stream, batch_size)
    k = cut % len(whole)
    resumed = _all(streams[name](), batch_size, start=whole[k].offset)
    assert_same_rows(whole[k + 1:], resumed)
    assert [b.offset for b in resumed] == [b.offset for b in whole[k + 1:]]


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_does_not_change_rows(streams: dict, name: str) -> None:
    assert_same_rows(_all(streams[name](), 7), _all(streams[name](), 1000))


@pytest.mark.parametrize("name", NAMES)
def test_iterating_twice_gives_the_same_rows(streams: dict, name: str) -> None:
    stream = streams[name]()
    assert_same_rows(_all(stream, 10), _all(stream, 10))


@pytest.mark.parametrize("name", NAMES)
def test_start_at_or_past_the_end_gives_nothing(streams: dict, name: str) -> None:
    stream = streams[name]()
    end = _all(stream, 1000)[-1].offset
    assert _all(stream, 4, start=end) == []
    assert _all(stream, 4, start=end + 100) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("args", [(0, 0), (-1, 0), (2.0, 0), (True, 0), (4, -1), (4, 1.5)])
def test_bad_batch_arguments_raise_input_error(streams: dict, name: str, args: tuple) -> None:
    with pytest.raises(InputError):
        streams[name]().batches(*args)


def test_batches_are_not_views_of_cached_data(streams: dict) -> None:
    stream = streams["ml-1m"]()
    first = next(iter(stream.batches(8)))
    first.keys[:] = 0
    again = next(iter(stream.batches(8)))
    assert not (again.keys == 0).all()


def test_importing_kraken_data_loads_neither_torch_nor_grpc() -> None:
    code = ("import sys, kraken.data; "
            "print(sorted(m for m in ('torch', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_offsets_count_records_with_malformed_ones(tmp_path: Path) -> None:
    lines = criteo_lines(6)
    lines.insert(2, "garbage")
    stream = CriteoStream(write_lines(tmp_path / "c.txt", lines))
    with malformed_reports() as caught:
        batches = list(stream.batches(2))
    assert len(caught) == 1
    assert [b.offset for b in batches] == [2, 5, 7]
    assert np.concatenate([b.event_time for b in batches]).tolist() == [0, 1, 3, 4, 5, 6]


@pytest.mark.parametrize("name", NAMES)
def test_features_describe_the_schema(streams: dict, name: str) -> None:
    stream = streams[name]()
    assert stream.features.schema == stream.schema
