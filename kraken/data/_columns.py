"""Vectorised conversions of parsed text columns to feature IDs, numbers and times.

Categorical values become IDs by a rule that depends only on the raw string, never
on what else is in the same chunk, so a value gets the same ID wherever it occurs:

- ``decimal``: a canonical non-negative decimal (``0`` or no leading zero, at most
  16 digits) keeps its integer value; anything else is hashed as a string;
- ``hex8``: exactly 8 lowercase hex digits (Criteo) keep their integer value;
  anything else is hashed as a string;
- empty or missing values map to the field's ``MISSING_ID``.

Values kept as integers are below ``2**56 - 1`` and so collision-free within a field
(:mod:`kraken.data.hashing`); hashed strings share the 56-bit space with them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kraken.data.base import Jagged
from kraken.data.features import FeatureKind
from kraken.data.hashing import MISSING_ID, feature_ids
from kraken.errors import ConfigError
from kraken.table.keys import field_keys

_MAX_DIGITS = 16
_HEX_LUT = np.full(128, -1, dtype=np.int64)
_HEX_LUT[48:58] = np.arange(10)
_HEX_LUT[97:103] = np.arange(10, 16)
_HEX_LUT[127] = -1
_HEX_SHIFTS = 4 * np.arange(7, -1, -1, dtype=np.int64)
_POW10 = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)


def as_strings(values: pd.Series | np.ndarray) -> np.ndarray:
    """``object[N]`` of ``str``, missing values as ``""``."""
    arr = values.to_numpy(dtype=object) if isinstance(values, pd.Series) \
        else np.asarray(values, dtype=object)
    missing = pd.isna(arr)
    if missing.any():
        arr = arr.copy()
        arr[missing] = ""
    return arr


def _lengths(s: np.ndarray) -> np.ndarray:
    return np.fromiter(map(len, s), dtype=np.int64, count=s.shape[0])


def parse_decimal(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid bool[N], value int64[N])`` for canonical non-negative decimals in ``s``."""
    n = s.shape[0]
    valid, value = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    lens = _lengths(s)
    idx = np.flatnonzero((lens >= 1) & (lens <= _MAX_DIGITS))
    if idx.size == 0:
        return valid, value
    codes = s[idx].astype(f"U{_MAX_DIGITS}").view(np.uint32).reshape(idx.size, _MAX_DIGITS)
    digit = (codes >= 48) & (codes <= 57)
    ln = lens[idx]
    ok = (digit.sum(axis=1) == ln) & ((codes[:, 0] != 48) | (ln == 1))
    d = np.where(digit, codes.astype(np.int64) - 48, 0)
    exp = ln[:, None] - 1 - np.arange(_MAX_DIGITS)
    value[idx] = (d * _POW10[np.clip(exp, 0, None)] * (exp >= 0)).sum(axis=1)
    valid[idx] = ok
    return valid, value


def parse_hex8(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid bool[N], value int64[N])`` for values of exactly 8 lowercase hex digits."""
    codes = s.astype("U9").view(np.uint32).reshape(s.shape[0], 9)  # a 9th char: too long
    d = _HEX_LUT[np.minimum(codes[:, :8], 127)]  # NUL padding and non-ASCII map to -1
    valid = (codes[:, 8] == 0) & (d >= 0).all(axis=1)
    value = (np.maximum(d, 0) << _HEX_SHIFTS).sum(axis=1)
    return valid, value


_PARSERS = {FeatureKind.DECIMAL: parse_decimal, FeatureKind.HEX8: parse_hex8}


def categorical_ids(field: int, values: pd.Series | np.ndarray,
                    kind: FeatureKind | str = FeatureKind.DECIMAL) -> np.ndarray:
    """``int64[N]`` feature IDs of raw string ``values`` in namespace ``field`` (see module).

    ``kind`` is a text rule (``DECIMAL`` or ``HEX8``, or their names); ``INT`` values are
    integers already and go through ``field_keys`` instead.
    """
    rule = FeatureKind.parse(kind)
    if rule not in _PARSERS:
        raise ConfigError(f"kind: {rule.value!r} is not a text rule; expected one of "
                          f"{[k.value for k in _PARSERS]}")
    s = as_strings(values)
    valid, value = _PARSERS[rule](s)
    out = field_keys(field, np.where(valid, value, MISSING_ID))
    other = ~valid & (s != "")
    if other.any():
        out[other] = feature_ids(field, s[other])
    return out


def to_number(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(value float64[N], bad bool[N])``: missing -> NaN (not bad); unparsable or inf -> bad."""
    if col.dtype.kind in "iuf":
        value = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return value, np.isinf(value)
    raw = as_strings(col)
    value = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    bad = (np.isnan(value) & (raw != "")) | np.isinf(value)
    return value, bad


def to_integer(col: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(value int64[N], missing bool[N], bad bool[N])`` for a column of integers."""
    if col.dtype.kind in "iu":
        return col.to_numpy(dtype=np.int64), np.zeros(len(col), bool), np.zeros(len(col), bool)
    value, bad = to_number(col)
    missing = np.isnan(value) & ~bad
    present = ~np.isnan(value) & ~bad
    bad |= present & ((value != np.round(value)) | (np.abs(value) > 2**53))
    return np.where(missing | bad, 0, value).astype(np.int64), missing, bad


def hour_and_weekday(unix_seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC hour of day ``[0, 24)`` and weekday ``[0, 7)`` (Monday = 0) of unix seconds."""
    t = unix_seconds.astype(np.int64, copy=False)
    return (t // 3600) % 24, (t // 86400 + 3) % 7  # 1970-01-01 was a Thursday


def yymmddhh_to_unix(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(unix seconds int64[N], valid bool[N])`` of ``YYMMDDHH`` integers (years 2000-2099)."""
    h = h.astype(np.int64, copy=False)
    yy, mm, dd, hh = h // 1_000_000, h // 10_000 % 100, h // 100 % 100, h % 100
    valid = (h >= 0) & (yy <= 99) & (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31) & (hh <= 23)
    month = np.where(valid, (yy + 30) * 12 + mm - 1, 0).astype("datetime64[M]")
    day = month.astype("datetime64[D]") + np.where(valid, dd - 1, 0).astype("timedelta64[D]")
    valid &= day.astype("datetime64[M]") == month  # rejects 31 April and the like
    unix = day.astype(np.int64) * 86400 + hh * 3600
    return np.where(valid, unix, 0), valid


def split_multi(field: int, values: pd.Series | np.ndarray, sep: str) -> Jagged:
    """A multi-valued column (``sep``-joined strings) as a Jagged of IDs; empty tokens dropped."""
    s = as_strings(values)
    n = s.shape[0]
    parts = pd.Series(s, dtype=object).str.split(sep, regex=False)
    lens = parts.str.len().to_numpy(dtype=np.int64) if n else np.zeros(0, np.int64)
    tokens = np.asarray(parts.explode().to_numpy(), dtype=object) if n else \
        np.zeros(0, dtype=object)
    keep = tokens != ""
    rows = np.repeat(np.arange(n), lens)
    lengths = np.bincount(rows[keep], minlength=n).astype(np.int64)
    return Jagged.from_lengths(categorical_ids(field, tokens[keep]), lengths)


def take_jagged(jag: Jagged, idx: np.ndarray) -> Jagged:
    """Rows ``idx`` of ``jag`` (any order, repeats allowed) as a new Jagged."""
    lens = jag.lengths[idx]
    offsets = np.zeros(idx.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    pos = np.repeat(jag.offsets[idx] - offsets[:-1], lens) + np.arange(offsets[-1])
    return Jagged(jag.values[pos], offsets)


class RowProblems:
    """Per-row validation results; ``reasons`` names the first failing check of each bad row."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self._checks: list[tuple[str, np.ndarray, np.ndarray]] = []

    def add(self, what: str, bad: np.ndarray, raw: pd.Series | np.ndarray) -> None:
        if bad.any():
            self.bad |= bad
            raw_arr = raw.to_numpy(dtype=object) if isinstance(raw, pd.Series) else raw
            self._checks.append((what, bad, raw_arr))

    def reasons(self) -> list[str]:
        out = []
        for i in np.flatnonzero(self.bad):
            what, _, raw = next(c for c in self._checks if c[1][i])
            v = raw[i]
            out.append(f"{what} {'<missing>' if pd.isna(v) or v == '' else repr(str(v))}")
        return out
