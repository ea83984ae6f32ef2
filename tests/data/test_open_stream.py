"""open_stream and the curated exports of kraken.data."""

from __future__ import annotations

from pathlib import Path

import pytest

import kraken.data
from kraken.data import (
    AvazuStream,
    CriteoStream,
    MovieLensStream,
    SyntheticConfig,
    SyntheticStream,
    TabularStream,
    open_stream,
)
from kraken.errors import ConfigError
from tests.data.fixtures import (
    AVAZU_HEADER,
    avazu_lines,
    criteo_lines,
    movielens_tables,
    write_lines,
    write_ml1m,
    write_ml100k,
)

EXPECTED_ALL = [
    "STREAM_NAMES", "AvazuStream", "Batch", "CriteoStream", "Jagged",
    "MovieLensStream", "Schema", "Stream", "SyntheticConfig", "SyntheticStream",
    "TabularSchema", "TabularStream", "feature_ids", "open_stream", "validate_batch",
    "DenseTransform", "FeatureKind", "FeatureSpec", "check_records", "featurize",
    "LogStream", "JoinConfig", "Joiner",
]


def test_all_is_pinned() -> None:
    assert sorted(kraken.data.__all__) == sorted(EXPECTED_ALL)
    for name in kraken.data.__all__:
        assert getattr(kraken.data, name) is not None


def test_every_name_opens(tmp_path: Path) -> None:
    crit = write_lines(tmp_path / "c.txt", criteo_lines(3))
    ava = write_lines(tmp_path / "a.csv", [AVAZU_HEADER, *avazu_lines(3)])
    tables = movielens_tables(5)
    ml1m, ml100k = write_ml1m(tmp_path / "ml-1m", tables), write_ml100k(tmp_path / "k", tables)
    csv = write_lines(tmp_path / "t.csv", ["y,a", "1,2"])
    s = open_stream("synthetic", n_records=10, seed=3)
    assert isinstance(s, SyntheticStream) and s.config == SyntheticConfig(n_records=10, seed=3)
    assert isinstance(open_stream("synthetic", config=SyntheticConfig()), SyntheticStream)
    assert isinstance(open_stream("criteo", path=crit), CriteoStream)
    assert isinstance(open_stream(f"criteo:{crit}"), CriteoStream)
    assert isinstance(open_stream("avazu", path=str(ava)), AvazuStream)
    m = open_stream("movielens-1m", root=ml1m)
    assert isinstance(m, MovieLensStream) and m.kind == "ml-1m"
    assert open_stream(f"movielens-100k:{ml100k}").kind == "ml-100k"
    t = open_stream("csv", path=csv, schema={"label": "y", "categorical": ["a"]})
    assert isinstance(t, TabularStream)
    assert isinstance(open_stream(csv, schema={"label": "y"}), TabularStream)


@pytest.mark.parametrize(("args", "kw", "message"), [
    (("nope",), {}, r"data.source: unknown stream 'nope'; allowed names: \['synthetic', "
                    r"'criteo', 'avazu', 'movielens-1m', 'movielens-100k', 'csv', 'redis'\]"),
    (("criteo",), {}, "data.path: required"),
    (("criteo",), {"root": "x"}, r"unknown key\(s\) \['root'\] for 'criteo'"),
    (("synthetic",), {"n_recs": 3}, r"unknown key\(s\) \['n_recs'\]"),
    (("synthetic:x",), {}, "reads no file"),
    (("criteo:a",), {"path": "b"}, "given twice"),
    (("synthetic",), {"n_records": -1}, "data.n_records: must be >= 0"),
    (("csv",), {"path": "x.csv", "schema": {"label": ""}}, "data.schema.label"),
])
def test_errors_name_the_key(args: tuple, kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_stream(*args, **kw)
