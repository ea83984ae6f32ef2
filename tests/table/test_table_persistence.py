"""save / load: atomic, checksummed, versioned; a bad file never changes the table."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kraken
from kraken.arrayfile import read_arrays, write_arrays
from kraken.table import TableConfig


def _trained(cfg: TableConfig, n: int = 50) -> kraken.SparseTable:
    t = kraken.SparseTable(cfg)
    keys = np.arange(n, dtype=np.int64) * 7919
    t.lookup(keys, train=True, now=1)
    t.apply_gradients(keys, np.full((n, cfg.dim), 0.5, np.float32), now=2)
    return t


@pytest.mark.parametrize("precision", list(kraken.Precision))
def test_round_trip_keeps_rows_state_and_counters(tmp_path: Path, precision) -> None:
    cfg = TableConfig(dim=5, capacity=100, optimizer=kraken.Adam(), precision=precision,
                      admission=kraken.CountMin(threshold=1, width=256))
    t = _trained(cfg)
    t.save(tmp_path / "t.ktab")
    u = kraken.SparseTable.from_file(tmp_path / "t.ktab")
    a, b = t.export(), u.export()
    oa, ob = np.argsort(a.keys), np.argsort(b.keys)
    for field in ("keys", "weights", "state", "last_seen", "count", "stamp"):
        np.testing.assert_array_equal(getattr(a, field)[oa], getattr(b, field)[ob])
    assert t.stats() == u.stats()
    # Training continues identically after the reload (rng and sketch restored).
    for tab in (t, u):
        tab.lookup(np.arange(200, 260), train=True, now=3)
        tab.apply_gradients(np.arange(0, 400, 7), np.full((58, 5), 0.1, np.float32), now=4)
    np.testing.assert_array_equal(t.lookup(np.arange(0, 400)), u.lookup(np.arange(0, 400)))


def test_dim_mismatch_on_load_is_named(tmp_path: Path) -> None:
    _trained(TableConfig(dim=4)).save(tmp_path / "t.ktab")
    other = _trained(TableConfig(dim=8), n=3)
    before = other.lookup(np.arange(3) * 7919)
    with pytest.raises(kraken.CheckpointMismatchError, match="dim is 4 in the file, 8 in this"):
        other.load(tmp_path / "t.ktab")
    np.testing.assert_array_equal(other.lookup(np.arange(3) * 7919), before)


def test_optimizer_mismatch_on_load_is_named(tmp_path: Path) -> None:
    _trained(TableConfig(dim=4, optimizer=kraken.SGD())).save(tmp_path / "t.ktab")
    with pytest.raises(kraken.CheckpointMismatchError, match="optimizer is 'sgd'"):
        kraken.SparseTable(TableConfig(dim=4, optimizer=kraken.Adam())).load(tmp_path / "t.ktab")


def test_too_small_capacity_on_load_is_named(tmp_path: Path) -> None:
    _trained(TableConfig(dim=2, capacity=100), n=50).save(tmp_path / "t.ktab")
    with pytest.raises(kraken.CheckpointMismatchError, match="capacity 10"):
        kraken.SparseTable(TableConfig(dim=2, capacity=10)).load(tmp_path / "t.ktab")


def _corruptions(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    flipped = bytearray(raw)
    flipped[-3] ^= 0xFF
    header_flip = bytearray(raw)
    header_flip[30] ^= 0x01
    return {
        "truncated": raw[: len(raw) - 17],
        "tiny": raw[:10],
        "bit flip in data": bytes(flipped),
        "bit flip in header": bytes(header_flip),
        "bad magic": b"NOTKRKN!" + raw[8:],
        "empty": b"",
    }


@pytest.mark.parametrize("case", ["truncated", "tiny", "bit flip in data", "bit flip in header",
                                  "bad magic", "empty"])
def test_corrupt_files_are_rejected_and_change_nothing(tmp_path: Path, case: str) -> None:
    path = tmp_path / "t.ktab"
    t = _trained(TableConfig(dim=3))
    t.save(path)
    path.write_bytes(_corruptions(path)[case])
    target = _trained(TableConfig(dim=3), n=4)
    before = target.export()
    with pytest.raises(kraken.CorruptCheckpointError):
        target.load(path)
    after = target.export()
    np.testing.assert_array_equal(np.sort(before.keys), np.sort(after.keys))


def test_unknown_format_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.ktab"
    _trained(TableConfig(dim=3)).save(path)
    raw = bytearray(path.read_bytes())
    raw[8:12] = struct.pack("<I", 99)
    path.write_bytes(bytes(raw))
    with pytest.raises(kraken.CheckpointVersionError, match="format version 99"):
        kraken.SparseTable.from_file(path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "t.ktab"
    t = _trained(TableConfig(dim=3))
    t.save(path)
    first = path.read_bytes()
    t.apply_gradients(np.arange(3) * 7919, np.ones((3, 3), np.float32), now=9)
    t.save(path)
    assert path.read_bytes() != first
    assert os.listdir(tmp_path) == ["t.ktab"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    write_arrays(path, {"v": 1}, {"x": np.arange(4)})
    with pytest.raises(kraken.DTypeError, match="cannot be stored"):
        write_arrays(path, {"v": 2}, {"x": np.arange(4), "bad": np.array(["s"], dtype=object)})
    meta, arrays = read_arrays(path)
    assert meta == {"v": 1} and arrays["x"].tolist() == [0, 1, 2, 3]
    assert os.listdir(tmp_path) == ["a.bin"]


dtypes = st.sampled_from(["int8", "int32", "int64", "uint16", "uint64", "float16", "float32",
                          "float64", "bool"])


@given(st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5),
                       st.tuples(dtypes, st.lists(st.integers(0, 5), max_size=3)), max_size=5),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4))
def test_arrayfile_round_trip(tmp_path_factory, spec, meta) -> None:
    rng = np.random.default_rng(0)
    arrays = {name: (rng.random(shape) * 100).astype(dtype)
              for name, (dtype, shape) in spec.items()}
    path = tmp_path_factory.mktemp("af") / "x.bin"
    write_arrays(path, meta, arrays)
    got_meta, got = read_arrays(path)
    assert got_meta == meta and list(got) == list(arrays)
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)


# -- streaming writes, chunked reads, incremental files -------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 4 KiB checksummed in halves, so small tables cross many boundaries."""
    import kraken.arrayfile
    import kraken.table.files
    monkeypatch.setattr(kraken.arrayfile, "CHUNK", 4096)
    monkeypatch.setattr(kraken.arrayfile, "_SPLIT", 1000)  # halves on two threads
    monkeypatch.setattr(kraken.table.files, "CHUNK", 4096)
    return 4096


def test_chunked_writes_and_reads_match_the_whole_array_container(tmp_path: Path,
                                                                  small_chunks: int) -> None:
    from kraken.arrayfile import Chunked, encode_arrays
    big = np.arange(10_000, dtype=np.float32).reshape(2500, 4)
    parts = Chunked(dtype=big.dtype, shape=big.shape,
                    chunks=lambda: iter(np.array_split(big, 7)))
    write_arrays(tmp_path / "a.kdat", {"m": 1}, {"big": parts, "k": np.arange(3)})
    data = (tmp_path / "a.kdat").read_bytes()
    assert data == encode_arrays({"m": 1}, {"big": big, "k": np.arange(3)})
    meta, arrays = read_arrays(tmp_path / "a.kdat")
    np.testing.assert_array_equal(arrays["big"], big)
    # a flipped byte in a later chunk of the array is caught
    raw = bytearray(data)
    raw[len(raw) - 200 - 3 * small_chunks] ^= 0xFF
    (tmp_path / "a.kdat").write_bytes(bytes(raw))
    with pytest.raises(kraken.CorruptCheckpointError, match="checksum"):
        read_arrays(tmp_path / "a.kdat")


def test_chunks_that_do_not_add_up_to_the_shape_are_refused(tmp_path: Path) -> None:
    from kraken.arrayfile import Chunked
    short = Chunked(dtype=np.dtype(np.int64), shape=(10,), chunks=lambda: iter([np.arange(9)]))
    with pytest.raises(kraken.ShapeError, match="80"):
        write_arrays(tmp_path / "a.kdat", {}, {"a": short})
    assert not list(tmp_path.iterdir())  # no file, no temporary left behind


def test_a_table_with_holes_round_trips_across_chunks(tmp_path: Path, small_chunks: int) -> None:
    cfg = TableConfig(dim=8, capacity=5000, optimizer=kraken.RowWiseAdaGrad(),
                      eviction=(kraken.TTL(ttl=1),))
    t = kraken.SparseTable(cfg)
    t.lookup(np.arange(3000), train=True, now=0)
    t.lookup(np.arange(0, 3000, 3), train=True, now=5)
    t.evict(5)  # two rows in three are freed: the arena has holes
    t.save(tmp_path / "t.ktab")
    u = kraken.SparseTable.from_file(tmp_path / "t.ktab")
    a, b = t.export(), u.export()
    oa, ob = np.argsort(a.keys), np.argsort(b.keys)
    for field in ("keys", "weights", "state", "last_seen", "count", "stamp"):
        np.testing.assert_array_equal(getattr(a, field)[oa], getattr(b, field)[ob])
    assert len(u) == 1000


def test_export_since_gives_whole_rows_changed_in_any_column() -> None:
    t = _trained(TableConfig(dim=3, capacity=100), n=10)
    v = t.stats().version
    rows, evicted = t.export_since(v)
    assert rows.keys.size == 0 and evicted.size == 0
    keys = np.arange(10, dtype=np.int64) * 7919
    t.lookup(keys[:2], train=True, now=3)  # an access: last_seen and count change
    t.apply_gradients(keys[5:6], np.ones((1, 3), np.float32), now=3)
    rows, _ = t.export_since(v)
    assert sorted(rows.keys.tolist()) == sorted(keys[[0, 1, 5]].tolist())
    assert (rows.last_seen == 3).all() and rows.version > v


def test_an_incremental_file_is_not_a_table_by_itself(tmp_path: Path) -> None:
    t = _trained(TableConfig(dim=3, capacity=100), n=10)
    t.save(tmp_path / "full.ktab")
    v = t.stats().version
    t.lookup(np.array([1]), train=True, now=4)
    t.save(tmp_path / "delta.ktab", since=v)
    with pytest.raises(kraken.CheckpointMismatchError, match="incremental"):
        kraken.SparseTable.from_file(tmp_path / "delta.ktab")
    with pytest.raises(kraken.CheckpointMismatchError, match="full"):
        t.load_chain([[tmp_path / "delta.ktab"]])
    u = kraken.SparseTable(t.config)
    u.load_chain([[tmp_path / "full.ktab"], [tmp_path / "delta.ktab"]])
    assert u.stats().version == t.stats().version
    np.testing.assert_array_equal(np.sort(u.export().keys), np.sort(t.export().keys))
    # a delta that starts after the full save's version leaves a gap
    w = t.stats().version
    t.lookup(np.array([2]), train=True, now=5)
    t.save(tmp_path / "late.ktab", since=w)
    with pytest.raises(kraken.CheckpointMismatchError, match="gap"):
        u.load_chain([[tmp_path / "full.ktab"], [tmp_path / "late.ktab"]])


@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_crc32_combine_joins_the_checksums_of_two_parts(a: bytes, b: bytes) -> None:
    import zlib

    from kraken.arrayfile import crc32_combine
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
