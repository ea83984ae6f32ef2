"""CriteoStream on synthetic files in the Kaggle format."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.data import CriteoStream, feature_ids, validate_batch
from kraken.data.hashing import MISSING_ID
from kraken.errors import DataError
from kraken.table.keys import field_keys
from tests.data.fixtures import assert_same_rows, criteo_lines, malformed_reports, write_lines


def _rows(stream: CriteoStream, batch_size: int = 64) -> list:
    return list(stream.batches(batch_size))


def test_one_line_decodes_to_the_documented_features(tmp_path: Path) -> None:
    ints = ["3", "", "-2", "0"] + ["1"] * 9
    cats = ["0000000a", "", "FFFFFFFF", "68fd1e64"] + ["00000001"] * 22
    path = write_lines(tmp_path / "c.txt", ["\t".join(["1", *ints, *cats])])
    stream = CriteoStream(path)
    (b,) = _rows(stream)
    validate_batch(b, stream.schema)
    assert stream.schema.fields == tuple(f"C{i}" for i in range(1, 27))
    assert stream.schema.dense == tuple(f"I{i}" for i in range(1, 14))
    assert b.label.tolist() == [1.0] and b.event_time.tolist() == [0] and b.offset == 1
    np.testing.assert_allclose(b.dense[0, :4], [np.log1p(3), 0, 0, 0])
    assert b.keys[0, 0] == field_keys(0, np.array([10]))[0]
    assert b.keys[0, 1] == field_keys(1, np.array([MISSING_ID], dtype=np.uint64))[0]
    assert b.keys[0, 2] == feature_ids(2, ["FFFFFFFF"])[0]  # not canonical: hashed
    assert b.keys[0, 3] == field_keys(3, np.array([0x68FD1E64]))[0]


def test_rows_match_an_independent_parse(tmp_path: Path) -> None:
    lines = criteo_lines(300, seed=3)
    rows = np.concatenate([b.keys for b in _rows(CriteoStream(write_lines(tmp_path / "c", lines)))])
    for i in (0, 17, 299):
        cols = lines[i].split("\t")
        expected = [MISSING_ID if c == "" else int(c, 16) for c in cols[14:]]
        got = [int(k) & ((1 << 56) - 1) for k in rows[i]]
        assert got == expected


def test_malformed_lines_are_skipped_counted_and_reported(tmp_path: Path) -> None:
    good = criteo_lines(40, seed=1)
    bad = {3: "1\t2\t3",                                   # 3 columns
           10: "",                                          # blank line
           11: "x" + good[0][1:],                           # label not a number
           20: "2" + good[0][1:],                           # label not 0/1
           25: good[0].replace("\t", "\tabc", 1),           # I1 unparsable
           30: "\t".join(good[0].split("\t")[1:])}          # 39 columns
    lines = list(good)
    for i in sorted(bad):
        lines.insert(i, bad[i])
    path = write_lines(tmp_path / "bad.txt", lines)
    stream = CriteoStream(path)
    with malformed_reports() as caught:
        got = _rows(stream, 7)
    assert stream.skipped == len(bad)
    messages = caught
    assert len(messages) == len(bad)
    assert [int(re.search(r":(\d+): ", m).group(1)) for m in messages] == \
        [i + 1 for i in sorted(bad)]
    assert all(m.startswith(f"{path}:") for m in messages)
    assert "expected 40 tab-separated fields, got 3" in messages[0]
    assert "invalid label 'x'" in messages[2] and "invalid label '2'" in messages[3]
    assert "unparsable I1" in messages[4] and "got 39" in messages[5]
    clean = _rows(CriteoStream(write_lines(tmp_path / "good.txt", good)), 7)
    for name in ("keys", "dense", "label"):
        np.testing.assert_array_equal(np.concatenate([getattr(b, name) for b in got]),
                                      np.concatenate([getattr(b, name) for b in clean]))
    kept = [i for i in range(len(lines)) if i not in bad]
    assert np.concatenate([b.event_time for b in got]).tolist() == kept


def test_warnings_are_rate_limited_with_a_summary(tmp_path: Path) -> None:
    lines = criteo_lines(30)
    lines[5:5] = ["oops"] * 25
    stream = CriteoStream(write_lines(tmp_path / "c.txt", lines))
    with malformed_reports() as caught:
        n = sum(len(b) for b in stream.batches(8))
    assert n == 30 and stream.skipped == 25
    assert len(caught) == 11
    assert "25 malformed Criteo records" in caught[-1]


def test_skipped_counts_the_latest_iteration(tmp_path: Path) -> None:
    lines = criteo_lines(10)
    lines[4:4] = ["oops"]
    stream = CriteoStream(write_lines(tmp_path / "c.txt", lines))
    list(stream.batches(3))
    again = stream.batches(3)
    assert stream.skipped == 0  # a second iteration starts from 0
    list(again)
    assert stream.skipped == 1
    list(stream.batches(3, start=6))
    assert stream.skipped == 0


def test_missing_file_and_directory_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope.txt"))):
        CriteoStream(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="directory"):
        CriteoStream(tmp_path)


def test_file_removed_after_construction_raises_data_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.txt", criteo_lines(5))
    stream = CriteoStream(path)
    path.unlink()
    with pytest.raises(DataError, match="no such file"):
        stream.batches(2)


def test_wrong_format_raises_before_any_batch(tmp_path: Path) -> None:
    csv_like = [",".join(line.split("\t")) for line in criteo_lines(30)]
    with pytest.raises(DataError, match="not in Criteo format.*40 tab-separated.*\\[1\\]"):
        CriteoStream(write_lines(tmp_path / "c.csv", csv_like))


def test_crlf_gzip_and_missing_final_newline_read_the_same(tmp_path: Path) -> None:
    lines = criteo_lines(50, seed=2)
    plain = _rows(CriteoStream(write_lines(tmp_path / "a.txt", lines)))
    (tmp_path / "b.txt").write_bytes("\r\n".join(lines).encode())
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    for name in ("b.txt", "c.txt.gz"):
        other = _rows(CriteoStream(tmp_path / name))
        assert_same_rows(plain, other)
        assert other[-1].offset == 50


@settings(max_examples=15)
@given(block_bytes=st.integers(1, 900))
def test_block_size_does_not_change_rows(tmp_path_factory: pytest.TempPathFactory,
                                         block_bytes: int) -> None:
    lines = criteo_lines(12, seed=4)
    lines[3:3] = ["", "bad"]
    path = tmp_path_factory.getbasetemp() / "blocks.txt"
    if not path.exists():
        path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    small = list(CriteoStream(path, block_bytes=block_bytes).batches(5))
    whole = list(CriteoStream(path).batches(5))
    assert_same_rows(small, whole)
    assert [b.offset for b in small] == [b.offset for b in whole] == [7, 12, 14]


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_bytes(b"")
    assert _rows(CriteoStream(tmp_path / "e.txt")) == []


def test_a_malformed_record_prints_one_line_whatever_the_warning_filters(tmp_path: Path) -> None:
    import subprocess
    import sys

    lines = criteo_lines(6)
    lines.insert(2, "garbage")
    path = write_lines(tmp_path / "c.txt", lines)
    code = ("from kraken.data import CriteoStream\n"
            f"s = CriteoStream({str(path)!r})\n"
            "print(sum(len(b) for b in s.batches(4)), s.skipped)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "1"]
    assert out.stderr.splitlines() == [
        f"{path}:3: skipped malformed Criteo record: expected 40 tab-separated fields, got 1"]
