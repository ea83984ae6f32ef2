"""The Avazu (Kaggle CTR prediction) format as a stream.

Each line is 24 comma-separated columns; the header line is optional and is
detected by the first line starting with ``id,click``::

    id, click, hour (YYMMDDHH, UTC), C1, banner_pos, site_id, site_domain,
    site_category, app_id, app_domain, app_category, device_id, device_ip,
    device_model, device_type, device_conn_type, C14 .. C21

Features of a batch (``B`` rows), all categorical, no dense features:

- ``keys int64[B, 23]``: the 21 columns after ``hour`` (field index 0..20), then
  ``hour_of_day`` (21) and ``weekday`` (22, Monday = 0) derived from ``hour``. The
  hex columns (``site_id`` .. ``device_model``) keep the integer value of 8 lowercase
  hex digits and the numeric ones that of a canonical decimal; other values are
  hashed (Avazu writes ``-1`` for unknown in ``C20``: it becomes a value of its own).
- ``event_time int64[B]``: unix seconds of ``hour``; ``YY`` is read as ``20YY``.

A line with the wrong number of columns, a click other than 0/1 or an invalid
``hour`` is malformed: skipped, counted in ``skipped``, reported with
one line to the ``kraken.data`` logger. ``id`` is not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kraken.data._assemble import Part
from kraken.data._columns import (
    RowProblems,
    categorical_ids,
    hour_and_weekday,
    to_integer,
    to_number,
    yymmddhh_to_unix,
)
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
from kraken.data.features import FeatureKind, FeatureSpec
from kraken.table.keys import field_keys

__all__ = ["AvazuStream"]

HEX = ("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
       "device_id", "device_ip", "device_model")
CATEGORICAL = ("C1", "banner_pos", *HEX, "device_type", "device_conn_type",
               *(f"C{i}" for i in range(14, 22)))
KINDS = tuple(FeatureKind.HEX8 if name in HEX else FeatureKind.DECIMAL for name in CATEGORICAL)
COLUMNS = ["id", "click", "hour", *CATEGORICAL]
FORMAT = TextFormat("Avazu", b",", len(COLUMNS))
HEADER_PREFIX = b"id,click"


class AvazuStream(FileStream):
    """Batches from an Avazu CSV file (``.gz`` allowed); see the module docstring.

    ``skipped`` counts the malformed records met by the latest ``batches`` iteration.
    ``has_header`` tells whether a header line was found (it is not a record).
    """

    _format = FORMAT

    def __init__(self, path: str | Path, *, block_bytes: int = BLOCK_BYTES) -> None:
        self.path = check_file(path)
        head = first_lines(self.path, 1)
        self.has_header = bool(head) and head[0].startswith(HEADER_PREFIX)
        self._header_lines = int(self.has_header)
        check_shape(self.path, FORMAT, header_lines=self._header_lines)
        self.schema = Schema(fields=(*CATEGORICAL, "hour_of_day", "weekday"))
        self._block_bytes = block_bytes
        self._reporter = self._new_reporter()

    @property
    def features(self) -> FeatureSpec:
        """Hex columns are ``hex8``, numeric ones ``decimal``; the derived ``hour_of_day``
        and ``weekday`` are sent as integers (``int``)."""
        return FeatureSpec(self.schema.fields, (*KINDS, FeatureKind.INT, FeatureKind.INT))

    def _parse(self, block: LineBlock, reporter: MalformedReporter) -> Part:
        shaped = block.n_fields == FORMAT.n_fields
        usecols = COLUMNS[1:]
        frame = parse_lines(block, FORMAT, shaped, COLUMNS, usecols, list(CATEGORICAL))
        records = block.records()[shaped]
        problems = RowProblems(len(frame))
        click, bad = to_number(frame["click"])
        problems.add("invalid click", bad | ((click != 0) & (click != 1)), frame["click"])
        hour, missing, bad = to_integer(frame["hour"])
        unix, valid = yymmddhh_to_unix(hour)
        problems.add("invalid hour", bad | missing | ~valid, frame["hour"])
        n_fields = len(self.schema.fields)
        keys = np.empty((len(frame), n_fields), dtype=np.int64)
        for j, name in enumerate(CATEGORICAL):
            keys[:, j] = categorical_ids(j, frame[name], KINDS[j])
        hod, weekday = hour_and_weekday(unix)
        keys[:, n_fields - 2] = field_keys(n_fields - 2, hod)
        keys[:, n_fields - 1] = field_keys(n_fields - 1, weekday)
        ok = ~problems.bad
        reporter.report(np.concatenate([block.records()[~shaped], records[~ok]]),
                        shape_reasons(block, FORMAT, ~shaped) + problems.reasons())
        return Part(keys=keys[ok], dense=np.zeros((int(ok.sum()), 0), dtype=np.float32),
                    label=click[ok].astype(np.float32), event_time=unix[ok], jagged={},
                    ends=records[ok] + 1, stop=block.stop)
