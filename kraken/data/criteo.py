"""The Criteo Kaggle (Display Advertising Challenge) format as a stream.

Each line is 40 tab-separated columns, no header::

    label  I1 .. I13          C1 .. C26
    0/1    integer counts     8-hex-digit hashed categoricals
           (may be empty)     (may be empty)

Features of a batch (``B`` rows):

- ``keys int64[B, 26]``: fields ``C1..C26`` (field index 0..25). A value of exactly
  8 lowercase hex digits is parsed as an integer, so IDs are collision-free; any
  other non-empty value is hashed; an empty one is the field's ``MISSING_ID``.
- ``dense float32[B, 13]``: ``I1..I13`` as ``log1p(max(x, 0))``, missing -> 0.
- ``event_time int64[B]``: the record index (0-based line number). Criteo has no
  timestamps, but its file order is chronological.

A line with the wrong number of columns, a label other than 0/1, or an ``I``
value that is not a finite number is malformed: it is skipped, counted in
``skipped`` and reported as one line to the ``kraken.data`` logger.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kraken.data._assemble import Part
from kraken.data._columns import RowProblems, categorical_ids, to_number
from kraken.data._file import FileStream
from kraken.data._lines import (
    BLOCK_BYTES,
    LineBlock,
    MalformedReporter,
    TextFormat,
    check_file,
    check_shape,
    parse_lines,
    shape_reasons,
)
from kraken.data.base import Schema
from kraken.data.features import DenseTransform, FeatureKind, FeatureSpec

__all__ = ["CriteoStream"]

DENSE = tuple(f"I{i}" for i in range(1, 14))
SPARSE = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ["label", *DENSE, *SPARSE]
FORMAT = TextFormat("Criteo", b"\t", len(COLUMNS))


class CriteoStream(FileStream):
    """Batches from a Criteo TSV file (``.gz`` allowed); see the module docstring.

    ``skipped`` counts the malformed records met by the latest ``batches`` iteration.
    """

    _format = FORMAT

    def __init__(self, path: str | Path, *, block_bytes: int = BLOCK_BYTES) -> None:
        self.path = check_file(path)
        check_shape(self.path, FORMAT, header_lines=0)
        self.schema = Schema(fields=SPARSE, dense=DENSE)
        self._block_bytes = block_bytes
        self._reporter = self._new_reporter()

    @property
    def features(self) -> FeatureSpec:
        """``C1..C26`` are ``hex8``; ``I1..I13`` go through ``log1p``."""
        return FeatureSpec.text(self.schema, FeatureKind.HEX8, DenseTransform.LOG1P)

    def _parse(self, block: LineBlock, reporter: MalformedReporter) -> Part:
        shaped = block.n_fields == FORMAT.n_fields
        frame = parse_lines(block, FORMAT, shaped, COLUMNS, COLUMNS, list(SPARSE))
        records = block.records()[shaped]
        problems = RowProblems(len(frame))
        label, bad = to_number(frame["label"])
        problems.add("invalid label", bad | ((label != 0) & (label != 1)), frame["label"])
        dense = np.zeros((len(frame), len(DENSE)), dtype=np.float32)
        for j, name in enumerate(DENSE):
            x, bad = to_number(frame[name])
            problems.add(f"unparsable {name}", bad, frame[name])
            dense[:, j] = DenseTransform.LOG1P.apply(x)
        keys = np.empty((len(frame), len(SPARSE)), dtype=np.int64)
        for j, name in enumerate(SPARSE):
            keys[:, j] = categorical_ids(j, frame[name], FeatureKind.HEX8)
        ok = ~problems.bad
        reporter.report(np.concatenate([block.records()[~shaped], records[~ok]]),
                        shape_reasons(block, FORMAT, ~shaped) + problems.reasons())
        return Part(keys=keys[ok], dense=dense[ok], label=label[ok].astype(np.float32),
                    event_time=records[ok], jagged={}, ends=records[ok] + 1, stop=block.stop)
