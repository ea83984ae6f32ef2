"""Raw feature values (as a client sends them) to a :class:`Batch`, exactly as the streams do.

Serving receives records such as ``{"c0": 17, "site_id": "1fbe01fe", "genres": ["Drama"],
"I1": 3}`` and must map them to the same feature IDs and dense values that training saw.
The stream's :class:`~kraken.data.features.FeatureSpec` (``stream.features``) says, per
sparse field, which :class:`~kraken.data.features.FeatureKind` its raw values follow and
how dense values are transformed.

A missing field, ``None`` or ``""`` is the field's ``MISSING_ID``, as in the streams.
Dense values are numbers (``None`` = missing) put through the spec's
:class:`~kraken.data.features.DenseTransform`. Derived fields (Avazu's and MovieLens'
``hour``/``weekday``) are sent as the derived integers.

``check_records`` lists every problem of a list of records (unknown names, wrong value
types) with its record index and field, and ``featurize`` turns valid records into a
batch (``label`` 0, ``event_time`` 0).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kraken.data._columns import categorical_ids
from kraken.data.base import Batch, Jagged
from kraken.data.features import FeatureKind, FeatureSpec
from kraken.data.hashing import MISSING_ID
from kraken.errors import InputError
from kraken.table.keys import field_keys

__all__ = ["FeatureSpec", "RecordProblem", "check_records", "featurize"]

_I64 = (-(1 << 63), (1 << 63) - 1)


@dataclasses.dataclass(frozen=True)
class RecordProblem:
    """Record ``index`` has a problem with feature ``field``: ``message``."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"records[{self.index}].{self.field}: {self.message}"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _scalar_problem(kind: FeatureKind, v: Any) -> str | None:
    if v is None or _is_int(v) and (kind is not FeatureKind.INT or _I64[0] <= v <= _I64[1]):
        return None
    if kind is FeatureKind.INT:
        return ("expected an integer" if not _is_int(v)
                else f"integer out of the int64 range: {v}")
    if isinstance(v, str):
        return None
    return f"expected an integer or a string, got {type(v).__name__}"


def _dense_problem(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return f"expected a number, got {type(v).__name__}"
    try:
        x = float(v)
    except OverflowError:
        return "number too large"
    return None if math.isfinite(x) else f"must be finite, got {x}"


def check_records(spec: FeatureSpec, records: Sequence[Mapping[str, Any]]) -> list[RecordProblem]:
    """Every problem of ``records``, in order: unknown names and values of the wrong type."""
    kind_of = dict(zip(spec.fields, spec.kinds))
    jag_of = dict(zip(spec.jagged, spec.jagged_kinds))
    dense = set(spec.dense)
    out: list[RecordProblem] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            out.append(RecordProblem(i, "", f"expected a mapping, got {type(rec).__name__}"))
            continue
        for name, v in rec.items():
            if name in kind_of:
                msg = _scalar_problem(kind_of[name], v)
            elif name in jag_of:
                vals = v if isinstance(v, (list, tuple)) else [v]
                msg = next((f"value {j}: {m}" if isinstance(v, (list, tuple)) else m
                            for j, x in enumerate(vals)
                            if (m := _scalar_problem(jag_of[name], x)) is not None), None)
            elif name in dense:
                msg = _dense_problem(v)
            else:
                msg = (f"unknown feature; features are "
                       f"{list(spec.fields + spec.jagged + spec.dense)}")
            if msg is not None:
                out.append(RecordProblem(i, str(name), msg))
    return out


def _ids(field: int, kind: FeatureKind, values: list[Any]) -> np.ndarray:
    """``int64[N]`` IDs of raw scalar ``values`` of one field (None = missing)."""
    if kind is FeatureKind.INT:
        missing = np.array([v is None for v in values], dtype=bool)
        ints = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
        out = field_keys(field, ints)
        if missing.any():
            out[missing] = field_keys(field, np.array([MISSING_ID], dtype=np.uint64))[0]
        return out
    text = np.array(["" if v is None else str(v) for v in values], dtype=object)
    return categorical_ids(field, text, kind)


def featurize(spec: FeatureSpec, records: Sequence[Mapping[str, Any]]) -> Batch:
    """A batch of ``B = len(records)`` samples from raw feature values (see the module).

    Raises :class:`InputError` naming the first problem of :func:`check_records`.
    """
    problems = check_records(spec, records)
    if problems:
        raise InputError(f"{problems[0]}" + (f" (and {len(problems) - 1} more problem(s))"
                                              if len(problems) > 1 else ""))
    b = len(records)
    keys = np.empty((b, len(spec.fields)), dtype=np.int64)
    for j, (name, kind) in enumerate(zip(spec.fields, spec.kinds)):
        keys[:, j] = _ids(j, kind, [r.get(name) for r in records])
    jagged = {}
    for k, (name, kind) in enumerate(zip(spec.jagged, spec.jagged_kinds)):
        lists = []
        for r in records:
            v = r.get(name)
            vals = v if isinstance(v, (list, tuple)) else [v]
            lists.append([x for x in vals if x is not None and x != ""])
        flat = [x for vals in lists for x in vals]
        lengths = np.array([len(vals) for vals in lists], dtype=np.int64)
        values = (_ids(len(spec.fields) + k, kind, flat) if flat
                  else np.empty(0, dtype=np.int64))
        jagged[name] = Jagged.from_lengths(values, lengths)
    raw = np.array([[np.nan if r.get(name) is None else float(r[name]) for name in spec.dense]
                    for r in records], dtype=np.float64).reshape(b, len(spec.dense))
    dense = np.empty((b, len(spec.dense)), dtype=np.float32)
    for j in range(len(spec.dense)):
        dense[:, j] = spec.dense_transform.apply(raw[:, j])
    return Batch(keys=keys, dense=dense, label=np.zeros(b, dtype=np.float32),
                 event_time=np.zeros(b, dtype=np.int64), jagged=jagged)
