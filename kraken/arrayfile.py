"""A small, safe container format for named numpy arrays plus JSON metadata.

Used for sparse tables and checkpoints. No pickle: only plain numeric dtypes
are written or read. Layout::

    offset 0   magic     8 bytes  b"KRAKEN\\x00\\x01"
           8   version   uint32   format version (FORMAT_VERSION)
          12   hlen      uint32   length of the JSON header
          16   hcrc      uint32   crc32 of the JSON header
          20   (pad)     uint32
          24   header    hlen bytes of UTF-8 JSON:
                         {"meta": {...}, "arrays": [{"name", "dtype", "shape",
                          "offset", "nbytes", "crc32"}, ...]}
           .   arrays    each at a 64-byte aligned offset, C order

Writes are atomic: the file is written under a temporary name in the same folder,
flushed and fsynced, then renamed over the target, so a reader sees either the old
file or the new one, never a half-written one. ``encode_arrays`` / ``decode_arrays``
give the same container as bytes (for a wire), with the same checks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from kraken.errors import CheckpointVersionError, CorruptCheckpointError, DTypeError

__all__ = ["FORMAT_VERSION", "Header", "decode_arrays", "encode_arrays", "read_arrays",
           "read_header", "write_arrays"]

MAGIC = b"KRAKEN\x00\x01"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIIII")
_ALIGN = 64
_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "bool"}


def _bytes(arr: np.ndarray) -> np.ndarray:
    """A flat uint8 view of ``arr``'s data (copied only if not C-contiguous)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _crc(arr: np.ndarray) -> int:
    return zlib.crc32(_bytes(arr))


def _write_to(f: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write the container to the seekable binary file ``f`` (positioned at 0)."""
    entries = []
    offset = 0
    for name, arr in arrays.items():
        if arr.dtype.name not in _DTYPES:
            raise DTypeError(f"array {name!r}: dtype {arr.dtype} cannot be stored; "
                             f"allowed: {sorted(_DTYPES)}")
        entries.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                        "offset": offset, "nbytes": int(arr.nbytes), "crc32": _crc(arr)})
        offset += -(-int(arr.nbytes) // _ALIGN) * _ALIGN
    header_probe = json.dumps({"meta": meta, "arrays": entries}).encode()
    base = -(-(_PREFIX.size + len(header_probe) + 16 * len(entries) + 64) // _ALIGN) * _ALIGN
    for e in entries:
        e["offset"] += base
    header = json.dumps({"meta": meta, "arrays": entries}).encode()
    assert _PREFIX.size + len(header) <= base
    f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header), 0))
    f.write(header)
    for e, arr in zip(entries, arrays.values()):
        f.seek(e["offset"])
        f.write(_bytes(arr))
    end = max([base] + [e["offset"] + e["nbytes"] for e in entries])
    size = f.seek(0, io.SEEK_END)
    if size < end:  # an empty last array: pad explicitly (a BytesIO does not grow on truncate)
        f.write(b"\0" * (end - size))
    else:
        f.truncate(end)


def encode_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """The container of ``arrays`` and JSON-able ``meta`` as bytes (same format as a file)."""
    buf = io.BytesIO()
    _write_to(buf, meta, arrays)
    return buf.getvalue()


def write_arrays(path: str | os.PathLike[str], meta: dict[str, Any],
                 arrays: dict[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` and JSON-able ``meta`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_to(f, meta, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_arrays`.

    Raises :class:`CorruptCheckpointError` (bad magic, truncation, checksum) or
    :class:`CheckpointVersionError`; ``FileNotFoundError`` passes through.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        return _read_from(f, size, str(path))


def decode_arrays(data: bytes, where: str = "payload"
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_arrays`, with the checks of :func:`read_arrays`
    (errors name ``where``)."""
    return _read_from(io.BytesIO(data), len(data), where)


@dataclasses.dataclass(frozen=True)
class Header:
    """A container's JSON header: ``meta``, one entry per array (name, dtype, shape,
    offset, nbytes, crc32), and ``digest``, a crc32 over the arrays' checksums that
    changes whenever any array's content does (cheap: the arrays are not read)."""

    meta: dict[str, Any]
    arrays: list[dict[str, Any]]

    @property
    def digest(self) -> int:
        return zlib.crc32(json.dumps([[e["name"], e["crc32"]] for e in self.arrays]).encode())


def read_header(path: str | os.PathLike[str]) -> Header:
    """The verified header of the file at ``path`` without reading its arrays."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        return _read_header(f, size, str(path))


def _read_header(f: Any, size: int, path: str) -> Header:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CorruptCheckpointError(f"{path}: truncated ({size} bytes), not a Kraken file")
    magic, version, hlen, hcrc, _ = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise CorruptCheckpointError(f"{path}: bad magic bytes {magic!r}, not a Kraken file")
    if version != FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path}: format version {version}, this build reads {FORMAT_VERSION}")
    header = f.read(hlen)
    if len(header) != hlen or zlib.crc32(header) != hcrc:
        raise CorruptCheckpointError(f"{path}: header checksum mismatch or truncated header")
    try:
        doc = json.loads(header)
        meta, entries = doc["meta"], doc["arrays"]
        if not isinstance(meta, dict) or not isinstance(entries, list):
            raise ValueError("meta must be an object and arrays a list")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{path}: unreadable header: {exc}") from exc
    return Header(meta=meta, arrays=entries)


def _entry(e: Any, path: str) -> tuple[str, str, list[int], int, int, int]:
    """``(name, dtype, shape, offset, nbytes, crc32)`` of a header entry, every type checked."""
    def ints(*values: Any) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in values)

    if not isinstance(e, dict):
        raise CorruptCheckpointError(f"{path}: unreadable array entry: {e!r:.80}")
    name, dtype, shape = e.get("name"), e.get("dtype"), e.get("shape")
    offset, nbytes, crc = e.get("offset"), e.get("nbytes"), e.get("crc32")
    if not isinstance(name, str) or not isinstance(shape, list) or \
            not ints(offset, nbytes, crc, *shape):
        raise CorruptCheckpointError(f"{path}: unreadable array entry: {e!r:.200}")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise CorruptCheckpointError(f"{path}: array {name!r} has dtype {dtype!r:.40}")
    return name, dtype, shape, offset, nbytes, crc


def _read_from(f: Any, size: int, path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    head = _read_header(f, size, path)
    meta, entries = head.meta, head.arrays
    arrays: dict[str, np.ndarray] = {}
    for e in entries:
        name, dtype, shape, offset, nbytes, crc = _entry(e, path)
        if offset < 0 or offset + nbytes > size:
            raise CorruptCheckpointError(
                f"{path}: truncated: array {name!r} needs bytes up to "
                f"{offset + nbytes}, file has {size}")
        # exact integers: a huge shape claim cannot wrap around to the stated size
        if min(shape, default=0) < 0 or math.prod(shape) * np.dtype(dtype).itemsize != nbytes:
            raise CorruptCheckpointError(f"{path}: array {name!r}: shape and size disagree")
        arr = np.empty(shape, dtype=np.dtype(dtype))
        f.seek(offset)
        if f.readinto(_bytes(arr)) != arr.nbytes:
            raise CorruptCheckpointError(f"{path}: truncated while reading {name!r}")
        if _crc(arr) != crc:
            raise CorruptCheckpointError(f"{path}: checksum mismatch in array {name!r}")
        arrays[name] = arr
    return meta, arrays
