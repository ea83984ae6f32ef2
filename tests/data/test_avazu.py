"""AvazuStream on synthetic files in the Kaggle format."""

from __future__ import annotations

import calendar
import re
from pathlib import Path

import numpy as np
import pytest

from kraken.data import AvazuStream, feature_ids, validate_batch
from kraken.errors import DataError
from kraken.table.keys import field_keys, split_keys
from tests.data.fixtures import (
    AVAZU_HEADER,
    assert_same_rows,
    avazu_lines,
    malformed_reports,
    write_lines,
)


def test_header_is_optional_and_detected(tmp_path: Path) -> None:
    lines = avazu_lines(30)
    with_header = AvazuStream(write_lines(tmp_path / "h.csv", [AVAZU_HEADER, *lines]))
    without = AvazuStream(write_lines(tmp_path / "n.csv", lines))
    assert with_header.has_header and not without.has_header
    a, b = list(with_header.batches(8)), list(without.batches(8))
    assert_same_rows(a, b)
    assert a[-1].offset == b[-1].offset == 30  # the header is not a record


def test_features_labels_and_time(tmp_path: Path) -> None:
    hours = (14102100, 14102213, 15010523)  # Tue 21 Oct 2014 00h, Wed 22 Oct 13h, Mon 5 Jan 23h
    lines = avazu_lines(9, hours=hours)
    stream = AvazuStream(write_lines(tmp_path / "a.csv", lines))
    (b,) = list(stream.batches(100))
    validate_batch(b, stream.schema)
    assert len(stream.schema.fields) == 23 and stream.schema.dense == ()
    assert stream.schema.fields[-2:] == ("hour_of_day", "weekday")
    assert "id" not in stream.schema.fields and "click" not in stream.schema.fields
    expected_t = [calendar.timegm((2000 + h // 10**6, h // 10**4 % 100, h // 100 % 100,
                                   h % 100, 0, 0)) for h in hours]
    assert b.event_time.tolist() == [expected_t[i % 3] for i in range(9)]
    fields, ids = split_keys(b.keys)
    assert (fields == np.arange(23)).all()
    assert ids[:3, 21].tolist() == [0, 13, 23] and ids[:3, 22].tolist() == [1, 2, 0]
    assert b.label.tolist() == [float(line.split(",")[1]) for line in lines]
    cols = lines[0].split(",")
    assert b.keys[0, 0] == field_keys(0, np.array([1005]))[0]          # C1, decimal
    assert b.keys[0, 2] == field_keys(2, np.array([int(cols[5], 16)]))[0]  # site_id, hex
    assert b.keys[0, 19] == feature_ids(19, ["-1"])[0]                 # C20 = -1: hashed


def test_malformed_lines_are_skipped_and_reported_with_line_numbers(tmp_path: Path) -> None:
    good = avazu_lines(20)
    lines = [AVAZU_HEADER, *good]
    bad_hour = good[0].split(",")
    bad_hour[2] = "14023100"  # 31 February
    lines.insert(3, ",".join(bad_hour))
    bad_click = good[1].split(",")
    bad_click[1] = "7"
    lines.insert(8, ",".join(bad_click))
    lines.insert(12, "only,three,fields")
    path = write_lines(tmp_path / "a.csv", lines)
    stream = AvazuStream(path)
    with malformed_reports() as caught:
        got = list(stream.batches(6))
    assert stream.skipped == 3
    assert [int(re.search(r"\.csv:(\d+):", m).group(1)) for m in caught] == \
        [4, 9, 13]
    assert "invalid hour '14023100'" in caught[0]
    assert sum(len(b) for b in got) == 20


def test_missing_file_header_only_and_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        AvazuStream(tmp_path / "missing.csv")
    assert list(AvazuStream(write_lines(tmp_path / "h.csv", [AVAZU_HEADER])).batches(4)) == []
    tsv = [line.replace(",", "\t") for line in avazu_lines(5)]
    with pytest.raises(DataError, match="not in Avazu format"):
        AvazuStream(write_lines(tmp_path / "t.tsv", tsv))
