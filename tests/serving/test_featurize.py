"""Raw values sent to a server map to exactly the IDs and dense values the streams produce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kraken.data import (
    AvazuStream,
    CriteoStream,
    MovieLensStream,
    SyntheticConfig,
    SyntheticStream,
    TabularStream,
    check_records,
    featurize,
)
from kraken.data.features import DenseTransform, FeatureKind, FeatureSpec
from kraken.errors import ConfigError, InputError
from kraken.serving import ModelSpec
from kraken.table.keys import split_keys
from tests.data.fixtures import (
    avazu_lines,
    criteo_lines,
    movielens_tables,
    utc_hour_weekday,
    write_lines,
    write_ml1m,
)
from tests.serving.helpers import publishing_trainer, spec_of


def _one_batch(stream, n):  # noqa: ANN001, ANN202
    return next(iter(stream.batches(n)))


def test_synthetic_ids_and_dense_round_trip() -> None:
    stream = SyntheticStream(SyntheticConfig(n_records=300, n_fields=4, n_dense=2, seed=3))
    b = _one_batch(stream, 300)
    spec = stream.features
    _, ids = split_keys(b.keys)
    records = [{**{f"c{j}": int(ids[i, j]) for j in range(4)},
                **{f"d{j}": float(b.dense[i, j]) for j in range(2)}} for i in range(300)]
    got = featurize(spec, records)
    np.testing.assert_array_equal(got.keys, b.keys)
    np.testing.assert_array_equal(got.dense, b.dense)


def test_criteo_strings_and_log1p_dense_as_the_stream(tmp_path: Path) -> None:
    lines = criteo_lines(200, seed=4)
    stream = CriteoStream(write_lines(tmp_path / "c.tsv", lines))
    b = _one_batch(stream, 200)
    spec = stream.features
    assert spec.dense_transform is DenseTransform.LOG1P and set(spec.kinds) == {FeatureKind.HEX8}
    records = []
    for line in lines:
        cols = line.split("\t")
        rec = {f"I{j}": (int(v) if v else None) for j, v in enumerate(cols[1:14], 1)}
        rec |= {f"C{j}": (v or None) for j, v in enumerate(cols[14:], 1)}
        records.append(rec)
    got = featurize(spec, records)
    np.testing.assert_array_equal(got.keys, b.keys)
    np.testing.assert_array_equal(got.dense, b.dense)


def test_avazu_with_derived_hour_and_weekday(tmp_path: Path) -> None:
    lines = avazu_lines(50, seed=5)
    stream = AvazuStream(write_lines(tmp_path / "a.csv", lines))
    b = _one_batch(stream, 50)
    spec = stream.features
    names = stream.schema.fields[:-2]
    records = []
    for line in lines:
        cols = line.split(",")
        hour = int(cols[2])
        ts = int(np.datetime64(f"20{hour // 10**6:02d}-{hour // 10**4 % 100:02d}-"
                               f"{hour // 100 % 100:02d}T{hour % 100:02d}:00", "s").astype(int))
        h, w = utc_hour_weekday(ts)
        records.append(dict(zip(names, cols[3:])) | {"hour_of_day": h, "weekday": w})
    np.testing.assert_array_equal(featurize(spec, records).keys, b.keys)


def test_movielens_side_features_and_genres(tmp_path: Path) -> None:
    tables = movielens_tables(60, seed=6)
    stream = MovieLensStream(write_ml1m(tmp_path / "ml-1m", tables), "ml-1m")
    b = _one_batch(stream, 60)
    spec = stream.features
    users = {u: (a, g, o, z) for u, a, g, o, z in tables["users"]}
    movies = {m: g for m, _, g in tables["movies"]}
    ratings = sorted(tables["ratings"], key=lambda r: r[3])
    records = []
    for u, m, _, ts in ratings:
        a, g, o, z = users.get(u, (None,) * 4)
        h, w = utc_hour_weekday(ts)
        records.append({"user": u, "movie": m, "age": a, "gender": g, "occupation": o,
                        "zip": z, "hour": h, "weekday": w, "genres": list(movies.get(m, ()))})
    got = featurize(spec, records)
    np.testing.assert_array_equal(got.keys, b.keys)
    np.testing.assert_array_equal(got.jagged["genres"].values, b.jagged["genres"].values)
    np.testing.assert_array_equal(got.jagged["genres"].offsets, b.jagged["genres"].offsets)


def test_csv_multi_valued_and_missing(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.csv", ["y,u,tags,x", "1,7,a|b,0.5", "0,,,", "1,abc,|c|,-2"])
    stream = TabularStream(path, {"label": "y", "categorical": ["u"],
                                  "multi_valued": ["tags"], "dense": ["x"]})
    b = _one_batch(stream, 3)
    records = [{"u": 7, "tags": ["a", "b"], "x": 0.5}, {"u": None},
               {"u": "abc", "tags": ["", "c", ""], "x": -2}]
    got = featurize(stream.features, records)
    np.testing.assert_array_equal(got.keys, b.keys)
    np.testing.assert_array_equal(got.dense, b.dense)
    np.testing.assert_array_equal(got.jagged["tags"].values, b.jagged["tags"].values)


def test_problems_name_record_and_field() -> None:
    spec = FeatureSpec(("a", "b"), ("int", "hex8"), ("g",), ("decimal",), ("x",))
    records = [{"a": 1, "b": "00ff00ff", "g": ["x", 3], "x": 1.5},
               {"a": "7", "zzz": 1, "x": float("inf")},
               {"a": True, "b": 1.5, "g": [None, {}], "x": 10**400},
               {"a": 2**70}]
    got = [(p.index, p.field) for p in check_records(spec, records)]
    assert got == [(1, "a"), (1, "zzz"), (1, "x"), (2, "a"), (2, "b"), (2, "g"), (2, "x"),
                   (3, "a")]
    with pytest.raises(InputError, match=r"records\[1\]\.a: expected an integer"):
        featurize(spec, records)
    ok = featurize(spec, [records[0], {}])
    assert ok.keys.shape == (2, 2) and ok.dense[1, 0] == 0.0
    assert ok.jagged["g"].lengths.tolist() == [2, 0]


def test_spec_round_trips_and_rejects_nonsense() -> None:
    spec = FeatureSpec(("a",), ("int",), dense=("x",), dense_transform="log1p")
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="kinds"):
        FeatureSpec(("a",), ("float",))
    with pytest.raises(ConfigError, match="distinct"):
        FeatureSpec(("a",), ("int",), dense=("a",))
    assert spec.kinds == (FeatureKind.INT,) and spec.dense_transform is DenseTransform.LOG1P
    with pytest.raises(ConfigError, match=r"features: unknown key\(s\) \['kind'\]"):
        FeatureSpec.from_dict({**spec.to_dict(), "kind": "int"})
    with pytest.raises(ConfigError, match=r"features: missing key\(s\) \['kinds'\]"):
        FeatureSpec.from_dict({"fields": ["a"]})
    with pytest.raises(ConfigError, match=r"features.dense_transform: expected one of"):
        FeatureSpec.from_dict({**spec.to_dict(), "dense_transform": "log"})
    with pytest.raises(ConfigError, match=r"features.kinds: 1 fields need as many kinds"):
        FeatureSpec.from_dict({**spec.to_dict(), "kinds": []})


def test_a_model_spec_with_unusable_embedding_settings_is_a_config_error(tmp_path: Path,
                                                                        ) -> None:
    tr, _ = publishing_trainer(tmp_path, n_records=10)
    d = spec_of(tr).to_dict()
    assert ModelSpec.from_dict(d).build_layout().to_dict() == d["embedding"]
    for bad, match in [({**d["embedding"], "pooling": "max"}, "spec.embedding.pooling"),
                       ({**d["embedding"], "table": "nope"}, "'nope' is not on the PS"),
                       ("sum", "spec.embedding: expected a table")]:
        with pytest.raises(ConfigError, match=match):
            ModelSpec.from_dict({**d, "embedding": bad})
