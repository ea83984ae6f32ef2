"""Any CSV (or Parquet) file as a stream, given a small :class:`TabularSchema`.

A CSV file must start with a header line naming its columns; fields may be
``"``-quoted but may not contain newlines. Each later line is a record. A
Parquet file (needs ``pyarrow``) is read row group by row group; each row is a record.

Features of a batch (``B`` rows, columns named by the schema)::

    keys       int64[B, len(categorical)]   field i = categorical[i]
    jagged     {name: Jagged} for multi_valued (fields continue after categorical),
               values split on ``multi_sep``, empty tokens dropped
    dense      float32[B, len(dense)]       the numbers as they are, missing -> 0
    label      float32[B]                   a number in [0, 1]
    event_time int64[B]                     the ``time`` column (unix seconds), or
                                            the record index without one

Categorical values: a canonical non-negative decimal keeps its value, anything else
is hashed (:mod:`kraken.data._columns`), so IDs do not depend on inferred dtypes.
A record with the wrong number of fields, a missing or invalid label, an
unparsable dense value or a missing or invalid time is malformed: skipped, counted
in ``skipped`` and reported as one line to the ``kraken.data`` logger
(CSV: file and line; Parquet: file and row).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kraken.config import build_dataclass
from kraken.data._assemble import Part
from kraken.data._columns import RowProblems, categorical_ids, split_multi, to_integer, to_number
from kraken.data._file import FileStream
from kraken.data._lines import (
    BLOCK_BYTES,
    LineBlock,
    MalformedReporter,
    TextFormat,
    check_file,
    check_shape,
    first_lines,
    parse_lines,
    shape_reasons,
)
from kraken.data.base import Schema
from kraken.data.features import FeatureSpec
from kraken.errors import ConfigError, DataError
from kraken.table.keys import FIELD_BITS

__all__ = ["TabularSchema", "TabularStream"]

PARQUET_SUFFIXES = (".parquet", ".pq")


def _check_name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: expected a non-empty column name, got {value!r}")
    return value


def _check_names(path: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"{path}: expected a list of column names, got "
                          f"{type(value).__name__} {value!r}")
    return tuple(_check_name(f"{path}[{i}]", v) for i, v in enumerate(value))


@dataclasses.dataclass(frozen=True)
class TabularSchema:
    """Which columns of a table are what; validated on construction (lists become tuples).

    ``label``: the 0/1 (or [0, 1]) target; ``categorical``: single-valued sparse
    fields; ``multi_valued``: sparse fields holding ``multi_sep``-joined values;
    ``dense``: numeric features; ``time``: unix seconds, optional; ``delimiter``:
    the CSV field separator (one character).
    """

    label: str
    categorical: tuple[str, ...] = ()
    multi_valued: tuple[str, ...] = ()
    multi_sep: str = "|"
    dense: tuple[str, ...] = ()
    time: str | None = None
    delimiter: str = ","

    def __post_init__(self) -> None:
        _check_name("label", self.label)
        for name in ("categorical", "multi_valued", "dense"):
            object.__setattr__(self, name, _check_names(name, getattr(self, name)))
        if self.time is not None:
            _check_name("time", self.time)
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1 \
                or self.delimiter in '"\r\n':
            raise ConfigError(f"delimiter: expected one character other than a quote or "
                              f"a line end, got {self.delimiter!r}")
        if not isinstance(self.multi_sep, str) or not self.multi_sep \
                or self.delimiter in self.multi_sep or "\n" in self.multi_sep:
            raise ConfigError(f"multi_sep: expected a non-empty string without the "
                              f"delimiter {self.delimiter!r} or a newline, got {self.multi_sep!r}")
        seen: dict[str, str] = {}
        for path, column in self._uses():
            if column in seen:
                raise ConfigError(f"{path}: column {column!r} is already used as {seen[column]}")
            seen[column] = path
        n_sparse = len(self.categorical) + len(self.multi_valued)
        if n_sparse > 1 << FIELD_BITS:
            raise ConfigError(f"categorical: at most {1 << FIELD_BITS} sparse fields "
                              f"(categorical + multi_valued) fit the key layout, got {n_sparse}")

    def _uses(self) -> list[tuple[str, str]]:
        uses = [("label", self.label)]
        for name in ("categorical", "multi_valued", "dense"):
            uses += [(f"{name}[{i}]", c) for i, c in enumerate(getattr(self, name))]
        if self.time is not None:
            uses.append(("time", self.time))
        return uses

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the schema reads."""
        return tuple(c for _, c in self._uses())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "schema") -> TabularSchema:
        """Build from a mapping (a config file table); errors are prefixed with ``path``.

        Unknown keys are listed, a missing ``label`` is named (``schema.label: missing
        (required)``), and the constructor's errors get the prefix
        (``schema.dense[0]: column 'y' is already used as label``).
        """
        table = dict(d) if isinstance(d, Mapping) else d
        return build_dataclass(cls, table, path)  # type: ignore[no-any-return]


class TabularStream(FileStream):
    """Batches from a CSV (``.gz`` allowed) or Parquet file; see the module docstring.

    ``skipped`` counts the malformed records met by the latest ``batches`` iteration.
    """

    def __init__(self, path: str | Path, schema: TabularSchema | Mapping[str, Any], *,
                 block_bytes: int = BLOCK_BYTES) -> None:
        self.spec = schema if isinstance(schema, TabularSchema) else \
            TabularSchema.from_dict(schema)
        self.path = check_file(path)
        self.parquet = self.path.suffix.lower() in PARQUET_SUFFIXES
        self.schema = Schema(fields=self.spec.categorical, jagged=self.spec.multi_valued,
                             dense=self.spec.dense)
        self._block_bytes = block_bytes
        self.header = self._parquet_columns() if self.parquet else self._csv_header()
        missing = [c for c in self.spec.columns if c not in self.header]
        if missing:
            raise DataError(f"{self.path}: column(s) {missing} named in the schema are not in "
                            f"the file; its columns are {list(self.header)}")
        dupes = sorted({c for c in self.spec.columns if self.header.count(c) > 1})
        if dupes:
            raise DataError(f"{self.path}: column(s) {dupes} appear more than once in the header")
        self._format = TextFormat("CSV", self.spec.delimiter.encode(), len(self.header),
                                  quoting=True)
        self._header_lines = 1
        if not self.parquet:
            check_shape(self.path, self._format, header_lines=1)
            names = [f"_{i}" for i in range(len(self.header))]
            position = {c: names[self.header.index(c)] for c in self.spec.columns}
            self._csv = (names, [position[c] for c in self.spec.columns],
                         [position[c] for c in self.spec.categorical + self.spec.multi_valued],
                         {v: k for k, v in position.items()})
        self._reporter = self._new_reporter()

    @property
    def features(self) -> FeatureSpec:
        """Every sparse column follows ``decimal``; dense values are used as they are."""
        return FeatureSpec.text(self.schema)

    def _new_reporter(self) -> MalformedReporter:
        if self.parquet:
            return MalformedReporter(self.path, "Parquet", rows=True)
        return super()._new_reporter()

    def _csv_header(self) -> list[str]:
        head = first_lines(self.path, 1)
        if not head:
            raise DataError(f"{self.path}: empty file, expected a header line naming the columns")
        text = head[0].decode("utf-8", "replace").removeprefix("\ufeff")
        return next(csv.reader([text], delimiter=self.spec.delimiter))

    def _parquet_columns(self) -> list[str]:
        pq = _pyarrow_parquet(self.path)
        try:
            return list(pq.ParquetFile(self.path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError
            raise DataError(f"{self.path}: not a readable Parquet file: {exc}") from exc

    def _parts(self, start: int) -> Iterator[Part]:
        return self._parquet_parts(start) if self.parquet else super()._parts(start)

    def _parse(self, block: LineBlock, reporter: MalformedReporter) -> Part:
        names, usecols, str_cols, rename = self._csv
        shaped = block.n_fields == self._format.n_fields
        frame = parse_lines(block, self._format, shaped, names, usecols, str_cols)
        records = block.records()
        part, bad_rows, reasons = self._convert(frame.rename(columns=rename), records[shaped],
                                                block.stop)
        reporter.report(np.concatenate([records[~shaped], bad_rows]),
                        shape_reasons(block, self._format, ~shaped) + reasons)
        return part

    def _parquet_parts(self, start: int) -> Iterator[Part]:
        pq = _pyarrow_parquet(self.path)
        reporter = self._reporter = self._new_reporter()
        first = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1 << 16,
                                                              columns=list(self.spec.columns)):
            n = batch.num_rows
            if first + n > start:
                skip = max(0, start - first)
                frame = batch.to_pandas().iloc[skip:].reset_index(drop=True)
                for c in self.spec.categorical + self.spec.multi_valued:
                    frame[c] = _as_text(frame[c])
                records = np.arange(first + skip, first + n, dtype=np.int64)
                part, bad_rows, reasons = self._convert(frame, records, first + n)
                reporter.report(bad_rows, reasons)
                yield part
            first += n
        reporter.close()

    def _convert(self, frame: pd.DataFrame, records: np.ndarray, stop: int,
                 ) -> tuple[Part, np.ndarray, list[str]]:
        """The valid rows of ``frame`` as a Part, plus the records and reasons of bad ones."""
        s = self.spec
        problems = RowProblems(len(frame))
        label, bad = to_number(frame[s.label])
        problems.add("invalid label", bad | ~((label >= 0) & (label <= 1)), frame[s.label])
        dense = np.zeros((len(frame), len(s.dense)), dtype=np.float32)
        for j, name in enumerate(s.dense):
            x, bad = to_number(frame[name])
            problems.add(f"unparsable {name}", bad, frame[name])
            dense[:, j] = np.nan_to_num(x, nan=0.0)
        if s.time is None:
            event_time = records
        else:
            event_time, missing, bad = to_integer(frame[s.time])
            problems.add(f"invalid time {s.time}", bad | missing, frame[s.time])
        keys = np.empty((len(frame), len(s.categorical)), dtype=np.int64)
        for j, name in enumerate(s.categorical):
            keys[:, j] = categorical_ids(j, frame[name])
        ok = ~problems.bad
        jagged = {name: split_multi(len(s.categorical) + k, frame[name][ok], s.multi_sep)
                  for k, name in enumerate(s.multi_valued)}
        part = Part(keys=keys[ok], dense=dense[ok], label=label[ok].astype(np.float32),
                    event_time=event_time[ok], jagged=jagged, ends=records[ok] + 1, stop=stop)
        return part, records[~ok], problems.reasons()


def _pyarrow_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise ConfigError(f"path: reading the Parquet file {path} needs the package 'pyarrow', "
                          f"which is not installed (pip install pyarrow)") from exc
    return pq


def _as_text(col: pd.Series) -> pd.Series:
    """A Parquet column as strings, integral numbers written as integers, missing kept."""
    if col.dtype.kind in "iu":
        return col.astype(str).astype(object)
    if col.dtype.kind == "f":
        integral = col.dropna()
        if (integral == np.round(integral)).all():
            return col.astype("Int64").astype(object).map(lambda v: v if pd.isna(v) else str(v))
    return col.astype(object).map(lambda v: v if pd.isna(v) else str(v))
