"""Raw records of each dataset featurize back to exactly the stream's batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kraken.data import (
    AvazuStream,
    CriteoStream,
    FeatureKind,
    FeatureSpec,
    MovieLensStream,
    SyntheticConfig,
    SyntheticStream,
    TabularStream,
    featurize,
)
from kraken.data.base import Batch, Schema
from kraken.data.raw import RawChunk, raw_chunks, raw_layout
from tests.data.fixtures import (
    AVAZU_HEADER,
    avazu_lines,
    concat,
    criteo_lines,
    movielens_tables,
    write_lines,
    write_ml1m,
    write_ml100k,
)


def records(chunk: RawChunk, spec: FeatureSpec) -> list[dict]:
    """The chunk as serving records: "" is missing, ``int`` fields as integers,
    multi-valued fields split on "|", dense values as numbers."""
    n = len(chunk)
    out: list[dict] = [{} for _ in range(n)]
    for name, kind in zip(spec.fields, spec.kinds, strict=True):
        for r, v in zip(out, chunk.columns[name], strict=True):
            r[name] = None if v == "" else int(v) if kind is FeatureKind.INT else v
    for name in spec.jagged:
        for r, v in zip(out, chunk.columns[name], strict=True):
            r[name] = [g for g in v.split("|") if g]
    for name in spec.dense:
        for r, v in zip(out, chunk.columns[name], strict=True):
            r[name] = None if v == "" else float(v)
    return out


def check_same(stream, spec: FeatureSpec, chunk_rows: int = 37) -> int:
    """Featurizing every raw chunk with ``spec`` gives the stream's rows; returns the count."""
    want = concat(list(stream.batches(1000)))
    chunks = list(raw_chunks(stream, chunk_rows))
    assert set(chunks[0].columns) == set(raw_layout(stream).columns)
    got = [featurize(spec, records(c, spec)) for c in chunks]
    got = concat([Batch(keys=b.keys, dense=b.dense, label=c.label, event_time=c.ts,
                        jagged=b.jagged) for b, c in zip(got, chunks, strict=True)])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    return int(want["label"].shape[0])


def test_synthetic_reads_back_with_decimal_kinds() -> None:
    stream = SyntheticStream(SyntheticConfig(n_records=500, n_fields=3, n_dense=2))
    assert check_same(stream, FeatureSpec.text(stream.schema)) == 500


@pytest.mark.parametrize("kind", ["ml-1m", "ml-100k"])
def test_movielens_reads_back_with_decimal_kinds_as_a_csv_would(tmp_path: Path, kind) -> None:
    write = write_ml1m if kind == "ml-1m" else write_ml100k
    root = write(tmp_path / kind, movielens_tables(300, seed=3))
    stream = MovieLensStream(root, kind)
    spec = FeatureSpec.text(Schema(fields=raw_layout(stream).categorical, jagged=("genres",)))
    assert check_same(stream, spec) == 300


def test_criteo_and_avazu_read_back_with_their_own_kinds(tmp_path: Path) -> None:
    lines = criteo_lines(200, seed=1)
    lines[7] = "2\t" + lines[7].split("\t", 1)[1]  # a bad label: skipped by both
    criteo = CriteoStream(write_lines(tmp_path / "c.txt", lines))
    assert check_same(criteo, criteo.features) == 199
    avazu = AvazuStream(write_lines(tmp_path / "a.csv", [AVAZU_HEADER, *avazu_lines(150)]))
    assert check_same(avazu, avazu.features) == 150


def test_csv_gives_its_columns_verbatim_and_skips_what_the_stream_skips(tmp_path: Path) -> None:
    lines = ["y,t,u,tags,x", "1,100,a,p|q,0.5", "0,101,7,,", "x,102,b,p,1", "1,103,007,q|,2.25"]
    stream = TabularStream(write_lines(tmp_path / "t.csv", lines),
                           {"label": "y", "time": "t", "categorical": ["u"],
                            "multi_valued": ["tags"], "dense": ["x"]})
    (chunk,) = raw_chunks(stream)
    assert chunk.columns["u"].tolist() == ["a", "7", "007"]
    assert chunk.columns["tags"].tolist() == ["p|q", "", "q|"]
    assert chunk.columns["x"].tolist() == ["0.5", "", "2.25"]
    assert chunk.label.tolist() == [1, 0, 1] and chunk.ts.tolist() == [100, 101, 103]
    assert check_same(stream, stream.features) == 3
