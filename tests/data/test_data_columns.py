"""The column conversions shared by the file streams."""

from __future__ import annotations

import calendar
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kraken.data import Jagged, feature_ids
from kraken.data._columns import (
    FeatureKind,
    categorical_ids,
    hour_and_weekday,
    parse_decimal,
    parse_hex8,
    take_jagged,
    to_integer,
    to_number,
    yymmddhh_to_unix,
)
from kraken.errors import ConfigError
from tests.data.fixtures import utc_hour_weekday


def _obj(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


def test_decimal_rule() -> None:
    s = _obj(["0", "7", "123", "007", "1e2", " 1", "+1", "-1", "", "1.0", "9" * 16, "9" * 17,
              "12\u0663", "x"])
    valid, value = parse_decimal(s)
    assert valid.tolist() == [True, True, True] + [False] * 7 + [True] + [False] * 3
    assert value[valid].tolist() == [0, 7, 123, int("9" * 16)]


def test_hex8_rule() -> None:
    valid, value = parse_hex8(_obj(["0000000a", "68fd1e64", "ffffffff", "FFFFFFFF", "abc",
                                    "0000000g", "", "123456789", "\u00e9\u00e9\u00e9\u00e9"
                                    "\u00e9\u00e9\u00e9\u00e9"]))
    assert valid.tolist() == [True, True, True] + [False] * 6
    assert value[:3].tolist() == [10, 0x68FD1E64, 0xFFFFFFFF]


def test_feature_kinds_are_one_validated_choice() -> None:
    values = _obj(["0000000a", "10", "x", ""])
    hex_ids = categorical_ids(2, values, FeatureKind.HEX8)
    assert np.array_equal(categorical_ids(2, values, "hex8"), hex_ids)  # a config's spelling
    dec_ids = categorical_ids(2, values)
    assert hex_ids[0] != dec_ids[0] and hex_ids[1] != dec_ids[1]  # the rules differ
    assert hex_ids[2] == dec_ids[2] and hex_ids[3] == dec_ids[3]  # hashed, missing: alike
    assert FeatureKind.parse("int") is FeatureKind.INT
    with pytest.raises(ConfigError, match=r"kind: expected one of \['int', 'decimal', 'hex8'\], "
                                          r"got 'hex'"):
        categorical_ids(2, values, "hex")
    with pytest.raises(ConfigError, match=r"'int' is not a text rule"):
        categorical_ids(2, values, FeatureKind.INT)


@given(st.lists(st.one_of(st.integers(0, 10**16 - 1).map(str), st.text(max_size=12)),
                max_size=30))
@example(["\x00", "a\x00", "a"])  # numpy's fixed-width strings would drop the trailing NUL
def test_categorical_ids_depend_on_the_string_only(values: list[str]) -> None:
    ids = categorical_ids(3, _obj(values))
    for v, k in zip(values, ids):
        canonical = v.isascii() and v.isdigit() and (v == "0" or v[0] != "0") and len(v) <= 16
        expected = feature_ids(3, np.array([int(v)])) if canonical else feature_ids(3, [v])
        assert k == expected[0]
    # the same value gets the same ID whatever else is in the chunk
    for i, v in enumerate(values):
        assert categorical_ids(3, _obj([v]))[0] == ids[i]


def test_to_number_and_to_integer() -> None:
    col = pd.Series(["1", "", "2.5", "abc", "inf", None], dtype=object)
    value, bad = to_number(col)
    assert bad.tolist() == [False, False, False, True, True, False]
    assert value[0] == 1 and np.isnan(value[1]) and value[2] == 2.5
    value, missing, bad = to_integer(col)
    assert missing.tolist() == [False, True, False, False, False, True]
    assert bad.tolist() == [False, False, True, True, True, False]
    assert value[0] == 1
    value, missing, bad = to_integer(pd.Series([3, 4]))
    assert value.tolist() == [3, 4] and not missing.any() and not bad.any()


@given(st.integers(-(10**10), 4 * 10**9))
def test_hour_and_weekday_match_datetime(t: int) -> None:
    hour, weekday = hour_and_weekday(np.array([t]))
    assert (int(hour[0]), int(weekday[0])) == utc_hour_weekday(t)


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)))
def test_yymmddhh_matches_calendar(d: dt.datetime) -> None:
    h = (d.year - 2000) * 10**6 + d.month * 10**4 + d.day * 100 + d.hour
    unix, valid = yymmddhh_to_unix(np.array([h]))
    assert valid[0] and unix[0] == calendar.timegm((d.year, d.month, d.day, d.hour, 0, 0))


def test_yymmddhh_rejects_impossible_dates() -> None:
    _, valid = yymmddhh_to_unix(np.array([14023100, 14043100, 14130100, 14100024, 14100000,
                                          -1, 123456789, 16022900, 15022900]))
    assert valid.tolist() == [False, False, False, False, False, False, False, True, False]


def test_take_jagged() -> None:
    j = Jagged.from_lengths(np.array([1, 2, 3, 4, 5]), np.array([2, 0, 3]))
    t = take_jagged(j, np.array([2, 0, 1, 2]))
    assert t.lengths.tolist() == [3, 2, 0, 3]
    assert t.values.tolist() == [3, 4, 5, 1, 2, 3, 4, 5]
