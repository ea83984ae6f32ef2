"""MovieLens 1M / 100K ratings as a time-ordered click stream.

The ratings file is loaded whole (1M ratings take about a second) and sorted by
timestamp, stably, so ratings with equal timestamps keep their file order. A rating
of 4 or more is a click (``label = 1``). Features of a batch (``B`` rows)::

    keys      int64[B, 8]   user, movie, age, gender, occupation, zip,
                            hour (UTC hour of day of the rating), weekday (Monday = 0)
    jagged    {"genres": Jagged}  the movie's genres (namespace index 8), hashed by name,
                            so a genre gets the same ID in ml-1m and ml-100k (where the
                            "unknown" flag counts as a genre)
    dense     float32[B, 0]
    event_time int64[B]     the rating's unix timestamp

User and movie keys are the integer ids; age, gender, occupation and zip follow the
rule of :mod:`kraken.data._columns` (a canonical decimal keeps its value, anything
else, like ml-100k's occupation names or a zip with a leading zero, is hashed).

Files read from ``root`` (users and movies files are latin-1)::

    ml-1m    ratings.dat  user::movie::rating::timestamp
             users.dat    user::gender::age::occupation::zip
             movies.dat   movie::title::genres            (genres joined by "|")
    ml-100k  u.data       user<TAB>movie<TAB>rating<TAB>timestamp
             u.user       user|age|gender|occupation|zip
             u.item       movie|title|release|video release|url|19 genre flags

Offsets count positions in the time-sorted sequence of valid ratings. A malformed
rating line (wrong column count, non-integer id or timestamp, rating outside
[0.5, 5]) is reported (one line to the ``kraken.data`` logger) when
the file is loaded and counted in ``skipped``. A malformed line of the users or
movies file is reported the same way and ignored, not counted: ratings of a user or
movie without a valid line get the fields' ``MISSING_ID`` (and no genres).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from kraken.data._assemble import Part, check_batch_args, rebatch
from kraken.data._columns import (
    RowProblems,
    categorical_ids,
    hour_and_weekday,
    split_multi,
    take_jagged,
    to_integer,
    to_number,
)
from kraken.data._lines import (
    MalformedReporter,
    TextFormat,
    check_file,
    check_shape,
    parse_lines,
    read_blocks,
    shape_reasons,
)
from kraken.data.base import Batch, Jagged, Schema
from kraken.data.features import FeatureKind, FeatureSpec
from kraken.data.hashing import MISSING_ID
from kraken.errors import ConfigError, DataError
from kraken.table.keys import field_keys

__all__ = ["MovieLensStream"]

GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
FIELDS = ("user", "movie", "age", "gender", "occupation", "zip", "hour", "weekday")
SIDE = ("age", "gender", "occupation", "zip")  # user features, fields 2..5
RATING_COLUMNS = ["user", "movie", "rating", "timestamp"]
_PART_ROWS = 1 << 16
_LOAD_BLOCK_BYTES = 1 << 24


@dataclasses.dataclass(frozen=True)
class _Layout:
    ratings: tuple[str, bytes]
    users: tuple[str, bytes, tuple[str, ...]]
    movies: tuple[str, bytes, tuple[str, ...]]


LAYOUTS = {
    "ml-1m": _Layout(("ratings.dat", b"::"),
                     ("users.dat", b"::", ("user", "gender", "age", "occupation", "zip")),
                     ("movies.dat", b"::", ("movie", "title", "genres"))),
    "ml-100k": _Layout(("u.data", b"\t"),
                       ("u.user", b"|", ("user", "age", "gender", "occupation", "zip")),
                       ("u.item", b"|", ("movie", "title", "release_date", "video_release_date",
                                         "imdb_url", *GENRES_100K))),
}


@dataclasses.dataclass(frozen=True)
class _Loaded:
    keys: np.ndarray
    label: np.ndarray
    event_time: np.ndarray
    genres: Jagged


class MovieLensStream:
    """Time-ordered MovieLens ratings from the folder ``root``; see the module docstring.

    ``kind`` is ``"ml-1m"`` or ``"ml-100k"``. Files are checked on construction and
    loaded on the first call of ``batches`` (then kept in memory).
    """

    def __init__(self, root: str | Path, kind: str = "ml-1m") -> None:
        if kind not in LAYOUTS:
            raise ConfigError(f"kind: must be one of {sorted(LAYOUTS)}, got {kind!r}")
        self.root, self.kind = Path(root), kind
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such directory (expected a MovieLens {kind} folder)")
        layout = LAYOUTS[kind]
        self._ratings = check_file(self.root / layout.ratings[0])
        self._users = check_file(self.root / layout.users[0])
        self._movies = check_file(self.root / layout.movies[0])
        check_shape(self._ratings, self._rating_format(), header_lines=0)
        check_shape(self._users, self._side_format(layout.users), header_lines=0)
        check_shape(self._movies, self._side_format(layout.movies), header_lines=0)
        self.schema = Schema(fields=FIELDS, jagged=("genres",))
        self._data: _Loaded | None = None
        self._skipped = 0

    @property
    def skipped(self) -> int:
        return self._skipped

    @property
    def features(self) -> FeatureSpec:
        """``user``, ``movie``, ``hour`` and ``weekday`` are integers (``int``); the side
        features and the genre names follow ``decimal``."""
        ints = ("user", "movie", "hour", "weekday")
        kinds = tuple(FeatureKind.INT if f in ints else FeatureKind.DECIMAL for f in FIELDS)
        return FeatureSpec(FIELDS, kinds, self.schema.jagged,
                           (FeatureKind.DECIMAL,) * len(self.schema.jagged))

    def __len__(self) -> int:
        """Number of valid ratings (loads the files)."""
        return int(self._load().label.shape[0])

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``batch_size`` ratings in time order from position ``start``."""
        check_batch_args(batch_size, start)
        return rebatch(self._parts(self._load(), start), batch_size)

    @staticmethod
    def _parts(data: _Loaded, start: int) -> Iterator[Part]:
        n = data.label.shape[0]
        for a in range(start, n, _PART_ROWS):
            b = min(a + _PART_ROWS, n)
            genres = data.genres.slice(a, b)
            yield Part(keys=data.keys[a:b].copy(), dense=np.zeros((b - a, 0), dtype=np.float32),
                       label=data.label[a:b].copy(), event_time=data.event_time[a:b].copy(),
                       jagged={"genres": Jagged(genres.values.copy(), genres.offsets)},
                       ends=np.arange(a + 1, b + 1, dtype=np.int64), stop=b)

    def _rating_format(self) -> TextFormat:
        return TextFormat(f"MovieLens {self.kind} ratings", LAYOUTS[self.kind].ratings[1], 4)

    def _side_format(self, spec: tuple[str, bytes, tuple[str, ...]]) -> TextFormat:
        return TextFormat(f"MovieLens {self.kind} {spec[0]}", spec[1], len(spec[2]), "latin-1")

    def _load(self) -> _Loaded:
        if self._data is None:
            user, movie, rating, ts = self._read_ratings()
            order = np.argsort(ts, kind="stable")
            user, movie, rating, ts = user[order], movie[order], rating[order], ts[order]
            uid, side = self._read_users()
            mid, genres = self._read_movies()
            hour, weekday = hour_and_weekday(ts)
            keys = np.empty((ts.shape[0], len(FIELDS)), dtype=np.int64)
            keys[:, 0] = field_keys(0, user)
            keys[:, 1] = field_keys(1, movie)
            keys[:, 2:6] = side[_positions(uid, user)]
            keys[:, 6] = field_keys(6, hour)
            keys[:, 7] = field_keys(7, weekday)
            self._data = _Loaded(keys=keys, label=(rating >= 4).astype(np.float32),
                                 event_time=ts, genres=take_jagged(genres, _positions(mid, movie)))
        return self._data

    def _read_ratings(self) -> tuple[np.ndarray, ...]:
        fmt = self._rating_format()
        reporter = MalformedReporter(self._ratings, fmt.what)
        cols: list[list[np.ndarray]] = [[], [], [], []]
        for block in read_blocks(self._ratings, fmt, block_bytes=_LOAD_BLOCK_BYTES):
            shaped = block.n_fields == fmt.n_fields
            frame = parse_lines(block, fmt, shaped, RATING_COLUMNS, RATING_COLUMNS, [])
            problems = RowProblems(len(frame))
            ids = []
            for name in ("user", "movie"):
                v, missing, bad = to_integer(frame[name])
                problems.add(f"invalid {name} id", bad | missing | (v < 0), frame[name])
                ids.append(v)
            rating, bad = to_number(frame["rating"])
            problems.add("invalid rating", bad | ~((rating >= 0.5) & (rating <= 5)),
                         frame["rating"])
            ts, missing, bad = to_integer(frame["timestamp"])
            problems.add("invalid timestamp", bad | missing | (ts < 0), frame["timestamp"])
            ok = ~problems.bad
            records = block.records()
            reporter.report(np.concatenate([records[~shaped], records[shaped][~ok]]),
                            shape_reasons(block, fmt, ~shaped) + problems.reasons())
            for out, v in zip(cols, (ids[0], ids[1], rating, ts)):
                out.append(v[ok])
        reporter.close()
        self._skipped = reporter.count
        dtypes = (np.int64, np.int64, np.float64, np.int64)
        return tuple(np.concatenate(c) if c else np.zeros(0, dt) for c, dt in zip(cols, dtypes))

    def _read_side(self, spec: tuple[str, bytes, tuple[str, ...]], path: Path,
                   ) -> tuple[np.ndarray, pd.DataFrame]:
        """``(ids int64[K], frame of the K valid lines)`` of a users or movies file."""
        names = spec[2]
        str_cols = [c for c in names[1:] if c not in GENRES_100K]
        fmt = self._side_format(spec)
        reporter = MalformedReporter(path, fmt.what)
        frames, ids = [], []
        for block in read_blocks(path, fmt, block_bytes=_LOAD_BLOCK_BYTES):
            shaped = block.n_fields == fmt.n_fields
            frame = parse_lines(block, fmt, shaped, list(names), list(names), str_cols)
            problems = RowProblems(len(frame))
            v, missing, bad = to_integer(frame[names[0]])
            problems.add(f"invalid {names[0]} id", bad | missing | (v < 0), frame[names[0]])
            if names[-1] == GENRES_100K[-1]:
                for g in GENRES_100K:
                    flag, bad = to_number(frame[g])
                    problems.add(f"invalid {g} flag", bad | ~np.isin(flag, (0, 1)), frame[g])
            ok = ~problems.bad
            records = block.records()
            reporter.report(np.concatenate([records[~shaped], records[shaped][~ok]]),
                            shape_reasons(block, fmt, ~shaped) + problems.reasons())
            frames.append(frame[ok])
            ids.append(v[ok])
        reporter.close()
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=names)
        return np.concatenate(ids) if ids else np.zeros(0, np.int64), frame

    def _read_users(self) -> tuple[np.ndarray, np.ndarray]:
        """User ids ``int64[K]`` and side keys ``int64[K + 1, 4]`` (last row: missing)."""
        uid, frame = self._read_side(LAYOUTS[self.kind].users, self._users)
        side = np.empty((uid.shape[0] + 1, len(SIDE)), dtype=np.int64)
        for j, name in enumerate(SIDE):
            side[:-1, j] = categorical_ids(2 + j, frame[name])
            side[-1, j] = field_keys(2 + j, np.array([MISSING_ID], dtype=np.uint64))[0]
        return uid, side

    def _read_movies(self) -> tuple[np.ndarray, Jagged]:
        """Movie ids ``int64[K]`` and genres ``Jagged`` of ``K + 1`` rows (last: empty)."""
        mid, frame = self._read_side(LAYOUTS[self.kind].movies, self._movies)
        field = len(FIELDS)
        if self.kind == "ml-1m":
            genres = split_multi(field, frame["genres"], "|")
        else:
            flags = frame[list(GENRES_100K)].to_numpy(dtype=np.float64) == 1
            _, cols = np.nonzero(flags)
            names = np.array(GENRES_100K, dtype=object)[cols]
            genres = Jagged.from_lengths(categorical_ids(field, names), flags.sum(axis=1))
        offsets = np.append(genres.offsets, genres.offsets[-1])
        return mid, Jagged(genres.values, offsets)


def _positions(table: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each ``query`` id in ``table`` (first occurrence); ``len(table)`` if absent."""
    n = table.shape[0]
    if n == 0:
        return np.zeros(query.shape[0], dtype=np.int64)
    uniq, first = np.unique(table, return_index=True)
    p = np.minimum(np.searchsorted(uniq, query), uniq.shape[0] - 1)
    return np.where(uniq[p] == query, first[p], n)
