"""TabularSchema validation and TabularStream on synthetic CSV files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from kraken.data import (
    TabularSchema,
    TabularStream,
    feature_ids,
    validate_batch,
)
from kraken.errors import ConfigError, DataError
from kraken.table.keys import field_keys
from tests.data.fixtures import concat, malformed_reports, write_lines

SCHEMA = TabularSchema(label="click", categorical=("user", "item"), multi_valued=("tags",),
                       dense=("price",), time="ts")
LINES = ["ts,user,item,click,tags,price,ignored",
         '100,7,"a,b",1,x|y,2.5,zzz',
         "101,007,b,0,,,zzz",
         "102,8,c,1,y||x|,-1e3,",
         "103,9,,0,z,0.25,q"]


def test_rows_decode_to_the_documented_features(tmp_path: Path) -> None:
    stream = TabularStream(write_lines(tmp_path / "t.csv", LINES), SCHEMA)
    assert stream.schema.fields == ("user", "item") and stream.schema.jagged == ("tags",)
    assert stream.schema.dense == ("price",)
    batches = list(stream.batches(3))
    for b in batches:
        validate_batch(b, stream.schema)
    rows = concat(batches)
    assert rows["label"].tolist() == [1, 0, 1, 0]
    assert rows["event_time"].tolist() == [100, 101, 102, 103]
    np.testing.assert_allclose(rows["dense"][:, 0], [2.5, 0, -1000, 0.25])
    assert rows["keys"][0, 0] == field_keys(0, np.array([7]))[0]
    assert rows["keys"][1, 0] == feature_ids(0, ["007"])[0]  # not canonical: hashed
    assert rows["keys"][0, 1] == feature_ids(1, ["a,b"])[0]  # quoted delimiter
    assert rows["keys"][3, 1] == feature_ids(1, [""])[0]     # missing
    assert rows["tags.lengths"].tolist() == [2, 0, 2, 1]     # empty tokens dropped
    assert rows["tags.values"].tolist() == feature_ids(2, ["x", "y", "y", "x", "z"]).tolist()
    assert batches[-1].offset == 4


def test_without_time_the_record_index_is_the_event_time(tmp_path: Path) -> None:
    lines = ["y,a"] + [f"{i % 2},{i}" for i in range(10)]
    stream = TabularStream(write_lines(tmp_path / "t.csv", lines),
                           {"label": "y", "categorical": ["a"]})
    assert concat(list(stream.batches(4)))["event_time"].tolist() == list(range(10))


def test_other_delimiters(tmp_path: Path) -> None:
    lines = [line.replace(",", ";") for line in ["y,a,d", "1,x,0.5", "0,y,1"]]
    stream = TabularStream(write_lines(tmp_path / "t.txt", lines),
                           TabularSchema(label="y", categorical=("a",), dense=("d",),
                                         delimiter=";"))
    assert concat(list(stream.batches(4)))["dense"][:, 0].tolist() == [0.5, 1.0]


def test_malformed_records_are_reported(tmp_path: Path) -> None:
    lines = [*LINES, "104,1,a,2,x,1,q", "105,1,a,1,x,abc,q", "xx,1,a,1,x,1,q",
             "106,1,a,,x,1,q", "107,1", "108,1,a,1,x,1,q"]
    path = write_lines(tmp_path / "t.csv", lines)
    stream = TabularStream(path, SCHEMA)
    with malformed_reports() as caught:
        rows = concat(list(stream.batches(2)))
    assert len(rows["label"]) == 5 and stream.skipped == 5
    messages = caught
    assert [int(re.search(r"t\.csv:(\d+):", m).group(1)) for m in messages] == [6, 7, 8, 9, 10]
    assert "invalid label '2'" in messages[0] and "unparsable price 'abc'" in messages[1]
    assert "invalid time ts 'xx'" in messages[2] and "invalid label <missing>" in messages[3]
    assert "expected 7 comma-separated fields, got 2" in messages[4]


def test_file_problems_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        TabularStream(tmp_path / "x.csv", SCHEMA)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        TabularStream(tmp_path / "empty.csv", SCHEMA)
    with pytest.raises(DataError, match=r"\['price'\] named in the schema are not in the file"):
        TabularStream(write_lines(tmp_path / "t.csv", ["ts,user,item,click,tags"]), SCHEMA)
    with pytest.raises(DataError, match="more than once"):
        TabularStream(write_lines(tmp_path / "d.csv", ["y,a,a", "1,2,3"]),
                      TabularSchema(label="y", categorical=("a",)))
    with pytest.raises(DataError, match="not in CSV format"):
        TabularStream(write_lines(tmp_path / "s.csv", ["y,a,b", *["1;2;3"] * 5]),
                      TabularSchema(label="y", categorical=("a",)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"label": ""}, "schema.label: expected a non-empty column name"),
    ({"label": "y", "categorical": "abc"}, "schema.categorical: expected a list"),
    ({"label": "y", "categorical": ("a", 3)}, r"schema.categorical\[1\]: expected a non-empty"),
    ({"label": "y", "dense": ("y",)}, r"schema.dense\[0\]: column 'y' is already used as "
                                      "label"),
    ({"label": "y", "categorical": ("a",), "multi_valued": ("a",)},
     r"schema.multi_valued\[0\]: column 'a' is already used as categorical\[0\]"),
    ({"label": "y", "delimiter": ",,"}, "schema.delimiter"),
    ({"label": "y", "delimiter": '"'}, "schema.delimiter"),
    ({"label": "y", "multi_sep": ","}, "schema.multi_sep"),
    ({"label": "y", "time": ""}, "schema.time"),
    ({"label": "y", "categorical": tuple(f"c{i}" for i in range(257))}, "at most 256"),
])
def test_schema_validation_names_the_path(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TabularSchema.from_dict(kwargs)
    with pytest.raises(ConfigError, match=message.removeprefix("schema.")):
        TabularSchema(**kwargs)  # built directly: the path is relative to the schema


def test_schema_from_dict() -> None:
    s = TabularSchema.from_dict({"label": "y", "categorical": ["a", "b"]})
    assert s == TabularSchema(label="y", categorical=("a", "b"))
    assert s.columns == ("y", "a", "b")
    with pytest.raises(ConfigError, match=r"data.schema: unknown key\(s\) \['labels'\]"):
        TabularSchema.from_dict({"labels": "y"}, path="data.schema")
    with pytest.raises(ConfigError, match=r"data.schema.label: missing \(required\)"):
        TabularSchema.from_dict({}, path="data.schema")
    with pytest.raises(ConfigError, match=r"data.schema.dense\[0\]"):
        TabularSchema.from_dict({"label": "y", "dense": [""]}, path="data.schema")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None,
                    reason="pyarrow is installed")
def test_parquet_without_pyarrow_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="'pyarrow'"):
        TabularStream(tmp_path / "t.parquet", SCHEMA)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet_reads_like_csv(tmp_path: Path) -> None:  # pragma: no cover - optional
    import pandas as pd

    csv_path = write_lines(tmp_path / "t.csv", LINES)
    pd.read_csv(csv_path, dtype={"user": str, "item": str, "tags": str}).to_parquet(
        tmp_path / "t.parquet")
    a = concat(list(TabularStream(csv_path, SCHEMA).batches(3)))
    b = concat(list(TabularStream(tmp_path / "t.parquet", SCHEMA).batches(3)))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
