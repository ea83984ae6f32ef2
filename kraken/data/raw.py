"""Raw records of a dataset: its feature values as the text the CSV source reads.

An event log carries raw values, not feature IDs (so that ``kraken serve`` hashes
requests as training did): :func:`raw_chunks` reads a dataset through the project's
own stream (same file parsing, same malformed-record rules, same order and labels)
and gives each valid record's feature columns as strings. :func:`raw_layout` names
those columns in the terms of a CSV (tabular) schema::

    stream           categorical                      multi_valued  dense
    synthetic        c0 .. c{F-1} (integer IDs)       -             d0 .. d{D-1}
    movielens-*      user movie age gender            genres ("|")  -
                     occupation zip hour weekday
    criteo           C1 .. C26 (hex as written)       -             I1 .. I13 (raw counts)
    avazu            C1 banner_pos site_id .. C21,    -             -
                     hour_of_day weekday
    csv              the schema's categorical         its multi_    its dense
                                                      valued

Read with decimal kinds (the CSV source's rule), the synthetic and MovieLens columns
give exactly the stream's keys; Criteo's and Avazu's hex columns are the text as
written (their streams read them as ``hex8``), Criteo's counts are not ``log1p``-ed.
A chunk: ``columns {name: object[n] of str}`` ("" = missing), ``label float32[n]``,
``ts int64[n]`` (the stream's event time: unix seconds, or the record index).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from kraken.data import avazu, criteo
from kraken.data._columns import as_strings, hour_and_weekday
from kraken.data._file import FileStream
from kraken.data._lines import parse_lines, read_blocks
from kraken.data.avazu import AvazuStream
from kraken.data.base import Stream
from kraken.data.criteo import CriteoStream
from kraken.data.movielens import FIELDS, GENRES_100K, LAYOUTS, SIDE, MovieLensStream, _positions
from kraken.data.synthetic import SyntheticStream
from kraken.data.tabular import TabularStream
from kraken.errors import ConfigError
from kraken.table.keys import split_keys

__all__ = ["RawChunk", "RawLayout", "raw_chunks", "raw_layout"]


@dataclasses.dataclass(frozen=True)
class RawLayout:
    """Names of the raw columns, grouped as a CSV (tabular) schema groups them."""

    categorical: tuple[str, ...]
    multi_valued: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    multi_sep: str = "|"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.categorical + self.multi_valued + self.dense

    def to_dict(self) -> dict[str, object]:
        """The ``schema`` table of a log config (no label column: actions carry it)."""
        return {"categorical": list(self.categorical), "multi_valued": list(self.multi_valued),
                "dense": list(self.dense), "multi_sep": self.multi_sep}


@dataclasses.dataclass(frozen=True)
class RawChunk:
    """``n`` records: ``columns {name: object[n] of str}``, ``label float32[n]``,
    ``ts int64[n]``."""

    columns: dict[str, np.ndarray]
    label: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])


def raw_layout(stream: Stream) -> RawLayout:
    """The raw columns :func:`raw_chunks` gives for ``stream`` (see the module)."""
    if isinstance(stream, SyntheticStream):
        return RawLayout(stream.schema.fields, dense=stream.schema.dense)
    if isinstance(stream, MovieLensStream):
        return RawLayout(FIELDS, ("genres",))
    if isinstance(stream, CriteoStream):
        return RawLayout(criteo.SPARSE, dense=criteo.DENSE)
    if isinstance(stream, AvazuStream):
        return RawLayout(stream.schema.fields)
    if isinstance(stream, TabularStream):
        s = stream.spec
        return RawLayout(s.categorical, s.multi_valued, s.dense, s.multi_sep)
    raise ConfigError(f"data.source: replaying a {type(stream).__name__} is not supported; "
                      f"supported: synthetic, movielens-*, criteo, avazu, csv")


def raw_chunks(stream: Stream, chunk_rows: int = 4096) -> Iterator[RawChunk]:
    """The stream's valid records, in its order, as raw text chunks (see the module)."""
    layout = raw_layout(stream)
    if isinstance(stream, SyntheticStream):
        yield from _synthetic(stream, chunk_rows)
    elif isinstance(stream, MovieLensStream):
        yield from _movielens(stream, chunk_rows)
    else:
        if isinstance(stream, TabularStream) and stream.parquet:
            raise ConfigError("data.path: replay reads CSV files; convert the Parquet file "
                              "to CSV first")
        yield from _file(stream, layout)


def _int_text(a: np.ndarray) -> np.ndarray:
    return np.array(list(map(str, a.tolist())), dtype=object)


def _float_text(a: np.ndarray) -> np.ndarray:
    """Shortest text that reads back to the same float32 (Python's float repr)."""
    return np.array(list(map(repr, a.astype(np.float64).tolist())), dtype=object)


def _synthetic(stream: SyntheticStream, chunk_rows: int) -> Iterator[RawChunk]:
    s = stream.schema
    for b in stream.batches(chunk_rows):
        _, ids = split_keys(b.keys)
        cols = {name: _int_text(ids[:, j]) for j, name in enumerate(s.fields)}
        cols.update({name: _float_text(b.dense[:, j]) for j, name in enumerate(s.dense)})
        yield RawChunk(cols, b.label, b.event_time)


def _movielens(stream: MovieLensStream, chunk_rows: int) -> Iterator[RawChunk]:
    user, movie, rating, ts = stream._read_ratings()
    order = np.argsort(ts, kind="stable")  # the stream's order
    user, movie, rating, ts = user[order], movie[order], rating[order], ts[order]
    layout = LAYOUTS[stream.kind]
    uid, users = stream._read_side(layout.users, stream._users)
    mid, movies = stream._read_side(layout.movies, stream._movies)
    side = {name: np.append(as_strings(users[name]), "") for name in SIDE}
    if stream.kind == "ml-1m":
        genres = as_strings(movies["genres"])
    else:
        flags = movies[list(GENRES_100K)].to_numpy(dtype=np.float64) == 1
        genres = np.array(["|".join(g for g, f in zip(GENRES_100K, row) if f) for row in flags],
                          dtype=object)
    genres = np.append(genres, "")
    hour, weekday = hour_and_weekday(ts)
    upos, mpos = _positions(uid, user), _positions(mid, movie)
    for a in range(0, ts.shape[0], chunk_rows):
        sl = slice(a, a + chunk_rows)
        cols = {"user": _int_text(user[sl]), "movie": _int_text(movie[sl])}
        cols.update({name: side[name][upos[sl]] for name in SIDE})
        cols.update({"hour": _int_text(hour[sl]), "weekday": _int_text(weekday[sl]),
                     "genres": genres[mpos[sl]]})
        yield RawChunk(cols, (rating[sl] >= 4).astype(np.float32), ts[sl])


def _file(stream: FileStream, layout: RawLayout) -> Iterator[RawChunk]:
    """Blocks parsed twice: by the stream (valid records, labels, times) and as text."""
    if isinstance(stream, TabularStream):
        names = stream._csv[0]
        source = {c: names[stream.header.index(c)] for c in layout.columns}
    else:
        names = list(criteo.COLUMNS if isinstance(stream, CriteoStream) else avazu.COLUMNS)
        source = {c: c for c in layout.columns if c in names}
    reporter = stream._new_reporter()
    fmt = stream._format
    for block in read_blocks(stream.path, fmt, header_lines=stream._header_lines,
                             block_bytes=stream._block_bytes):
        part = stream._parse(block, reporter)
        if not len(part):
            continue
        shaped = block.n_fields == fmt.n_fields
        used = sorted(set(source.values()))
        frame = parse_lines(block, fmt, shaped, names, used, used)
        rows = np.searchsorted(block.records()[shaped], part.ends - 1)
        cols = {c: as_strings(frame[src])[rows] for c, src in source.items()}
        if isinstance(stream, AvazuStream):
            hod, weekday = hour_and_weekday(part.event_time)
            cols["hour_of_day"], cols["weekday"] = _int_text(hod), _int_text(weekday)
        yield RawChunk({c: cols[c] for c in layout.columns}, part.label, part.event_time)
    reporter.close()
