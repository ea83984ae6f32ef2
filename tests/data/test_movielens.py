"""MovieLensStream on synthetic folders in the ml-1m and ml-100k layouts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kraken.data import MovieLensStream, feature_ids, validate_batch
from kraken.data.hashing import MISSING_ID
from kraken.errors import ConfigError, DataError
from kraken.table.keys import field_keys, split_keys
from tests.data.fixtures import (
    concat,
    malformed_reports,
    movielens_tables,
    utc_hour_weekday,
    write_lines,
    write_ml1m,
    write_ml100k,
)

WRITERS = {"ml-1m": write_ml1m, "ml-100k": write_ml100k}


@pytest.fixture(scope="module")
def tables() -> dict:
    return movielens_tables(400, seed=5)


def _stream(tmp_path: Path, kind: str, tables: dict) -> MovieLensStream:
    return MovieLensStream(WRITERS[kind](tmp_path / kind, tables), kind)


@pytest.mark.parametrize("kind", ["ml-1m", "ml-100k"])
def test_ratings_come_in_stable_time_order(tmp_path: Path, kind: str, tables: dict) -> None:
    stream = _stream(tmp_path, kind, tables)
    rows = concat(list(stream.batches(37)))
    ratings = tables["ratings"]
    order = sorted(range(len(ratings)), key=lambda i: ratings[i][3])  # sorted() is stable
    assert rows["event_time"].tolist() == [ratings[i][3] for i in order]
    _, ids = split_keys(rows["keys"])
    assert ids[:, 0].tolist() == [ratings[i][0] for i in order]  # ties keep file order
    assert ids[:, 1].tolist() == [ratings[i][1] for i in order]
    assert rows["label"].tolist() == [float(ratings[i][2] >= 4) for i in order]
    assert len(stream) == len(ratings) and stream.skipped == 0


@pytest.mark.parametrize("kind", ["ml-1m", "ml-100k"])
def test_user_time_and_genre_features(tmp_path: Path, kind: str, tables: dict) -> None:
    stream = _stream(tmp_path, kind, tables)
    assert stream.schema.fields == ("user", "movie", "age", "gender", "occupation", "zip",
                                    "hour", "weekday")
    assert stream.schema.jagged == ("genres",)
    batches = list(stream.batches(50))
    for b in batches:
        validate_batch(b, stream.schema)
    rows = concat(batches)
    users = {u[0]: u for u in tables["users"]}
    movies = {m[0]: m for m in tables["movies"]}
    genre_field = stream.schema.field_index("genres")
    assert genre_field == 8
    ends = np.cumsum(rows["genres.lengths"])
    for i in range(0, len(rows["label"]), 7):
        f, ids = split_keys(rows["keys"][i])
        assert f.tolist() == list(range(8))
        user, movie, t = int(ids[0]), int(ids[1]), int(rows["event_time"][i])
        assert (int(ids[6]), int(ids[7])) == utc_hour_weekday(t)
        if user in users:
            _, age, gender, occupation, zipcode = users[user]
            assert ids[2] == age and ids[4] == occupation
            assert rows["keys"][i, 3] == feature_ids(3, [gender])[0]
            canonical = zipcode.isdigit() and (zipcode == "0" or zipcode[0] != "0")
            assert rows["keys"][i, 5] == (field_keys(5, np.array([int(zipcode)]))[0] if canonical
                                          else feature_ids(5, [zipcode])[0])
        else:
            assert (ids[2:6] == MISSING_ID).all()
        genres = rows["genres.values"][ends[i] - rows["genres.lengths"][i]:ends[i]]
        if movie in movies:
            names = movies[movie][2] or (("unknown",) if kind == "ml-100k" else ())
        else:
            names = ()
        expected = feature_ids(genre_field, list(names)) if names else np.zeros(0, np.int64)
        assert sorted(genres.tolist()) == sorted(expected.tolist())


def test_genre_ids_agree_between_kinds(tmp_path: Path, tables: dict) -> None:
    a = concat(list(_stream(tmp_path, "ml-1m", tables).batches(1000)))
    b = concat(list(_stream(tmp_path, "ml-100k", tables).batches(1000)))
    nonempty = a["genres.lengths"] > 0
    assert nonempty.any()
    assert set(a["genres.values"].tolist()) <= set(b["genres.values"].tolist())


def test_latin1_titles_are_read(tmp_path: Path, tables: dict) -> None:
    root = write_ml1m(tmp_path / "ml-1m", tables)
    assert "\u00e9".encode("latin-1") in (root / "movies.dat").read_bytes()
    stream = MovieLensStream(root, "ml-1m")
    assert sum(len(b) for b in stream.batches(100)) == 400


def test_malformed_rating_and_user_lines(tmp_path: Path, tables: dict) -> None:
    root = write_ml1m(tmp_path / "ml-1m", tables)
    lines = (root / "ratings.dat").read_text().splitlines()
    lines.insert(2, "1::2::3")
    lines.insert(5, "1::2::9::978300000")
    lines.insert(9, "1::x::3::978300000")
    write_lines(root / "ratings.dat", lines)
    users = (root / "users.dat").read_text().splitlines()
    users[0] = "1::M"
    write_lines(root / "users.dat", users)
    stream = MovieLensStream(root, "ml-1m")
    with malformed_reports() as caught:
        rows = concat(list(stream.batches(64)))
    assert stream.skipped == 3 and len(rows["label"]) == 400
    messages = caught
    assert [int(re.search(r"ratings\.dat:(\d+):", m).group(1)) for m in messages[:3]] == \
        [3, 6, 10]
    assert "invalid rating '9'" in messages[1] and "invalid movie id 'x'" in messages[2]
    assert "users.dat:1:" in messages[3]
    _, ids = split_keys(rows["keys"])
    assert (ids[ids[:, 0] == 1, 2:6] == MISSING_ID).all()  # user 1 lost its side features
    # skipped stays put on later iterations (the file is loaded once)
    assert sum(len(b) for b in stream.batches(1000)) == 400 and stream.skipped == 3


def test_bad_kind_missing_folder_and_missing_file(tmp_path: Path, tables: dict) -> None:
    with pytest.raises(ConfigError, match="kind"):
        MovieLensStream(tmp_path, "ml-20m")
    with pytest.raises(DataError, match="no such directory"):
        MovieLensStream(tmp_path / "nope")
    root = write_ml1m(tmp_path / "ml-1m", tables)
    (root / "users.dat").unlink()
    with pytest.raises(DataError, match="users.dat: no such file"):
        MovieLensStream(root)


def test_wrong_layout_raises_data_error(tmp_path: Path, tables: dict) -> None:
    root = write_ml100k(tmp_path / "x", tables)
    for name in ("ratings.dat", "users.dat", "movies.dat"):
        (root / name).write_bytes((root / "u.data").read_bytes())
    with pytest.raises(DataError, match="not in MovieLens ml-1m ratings format"):
        MovieLensStream(root, "ml-1m")


def test_user_key_is_the_user_id(tmp_path: Path, tables: dict) -> None:
    b = next(iter(_stream(tmp_path, "ml-1m", tables).batches(1)))
    _, ids = split_keys(b.keys)
    assert b.keys[0, 0] == field_keys(0, ids[:1, 0])[0]
