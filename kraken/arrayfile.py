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
file or the new one, never a half-written one.

Files are written and read as streams of large chunks (``CHUNK`` bytes): an array may
be given as a :class:`Chunked` producer (a table writes its arena slices without a
full copy), each chunk's crc32 is folded into the array's checksum on the calling
thread while a writer thread writes the previous chunks (both release the GIL), and
the header, whose checksums are known only at the end, is written last into room
reserved for it at the start (JSON padded with spaces). Reads mirror this: a reader
fills the destination chunk by chunk while the checksum of the previous chunk is
computed. The format (version 1) is the same either way. ``encode_arrays`` / ``decode_arrays``
give the same container as bytes (for a wire), with the same checks.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import queue
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kraken.errors import (
    CheckpointVersionError,
    CorruptCheckpointError,
    DTypeError,
    ShapeError,
)

__all__ = ["CHUNK", "FORMAT_VERSION", "After", "Chunked", "Header", "Into", "crc32_combine",
           "decode_arrays", "encode_arrays", "read_arrays", "read_header", "write_arrays"]

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


CHUNK = 32 << 20
"""Bytes per write or read call, and per checksum step."""
_SPLIT = 1 << 20
"""A chunk at least twice this long has its crc32 computed in two halves on two threads
(zlib releases the GIL), joined with :func:`crc32_combine`."""


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


@functools.lru_cache(maxsize=64)
def _zeros_op(nbytes: int) -> tuple[int, ...]:
    """The GF(2) operator that advances a crc32 over ``nbytes`` zero bytes (zlib's
    crc32_combine method: squarings of the one-zero-bit operator)."""
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # 2, 4, 8 zero bits: one zero byte
    result: list[int] | None = None
    while nbytes:
        if nbytes & 1:
            result = op if result is None else [_gf2_times(op, r) for r in result]
        nbytes >>= 1
        if nbytes:
            op = _gf2_square(op)
    return tuple(result if result is not None else [1 << n for n in range(32)])


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and
    ``len2 = len(b)``: lets the halves of a chunk be checksummed at the same time."""
    if len2 <= 0:
        return crc1
    return _gf2_times(list(_zeros_op(len2)), crc1) ^ crc2


def _crc_into(b: np.ndarray, crc: int, pool: ThreadPoolExecutor | None) -> int:
    """``zlib.crc32(b, crc)``; the second half on ``pool`` while this thread does the first."""
    n = b.shape[0]
    if pool is None or n < 2 * _SPLIT:
        return zlib.crc32(b, crc)
    half = n // 2
    second = pool.submit(zlib.crc32, b[half:])
    crc = zlib.crc32(b[:half], crc)
    return crc32_combine(crc, second.result(), n - half)
_QUEUE = 4
"""Chunks a writer may hold in flight (bounds the memory of a streaming write)."""
_CRC_PLACEHOLDER = 0xFFFFFFFF
"""The widest crc32 in JSON: the header written last never outgrows the room reserved."""


@dataclasses.dataclass(frozen=True)
class Chunked:
    """An array given by ``dtype``, ``shape`` and ``chunks()``, a producer of its C-order
    data as consecutive arrays (any shapes) whose bytes add up to the whole array. Lets a
    writer stream an array that does not exist in one piece (rows gathered from an arena
    a slice at a time) without materialising it."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _chunks_of(arr: np.ndarray) -> Iterator[np.ndarray]:
    flat = _bytes(arr)
    for i in range(0, flat.shape[0], CHUNK):
        yield flat[i:i + CHUNK]


def _layout(meta: dict[str, Any], arrays: dict[str, np.ndarray | Chunked]
            ) -> tuple[list[dict[str, Any]], int, int]:
    """Array entries (crc32 still a placeholder), the first array's offset and the end."""
    entries = []
    offset = 0
    for name, arr in arrays.items():
        dtype = np.dtype(arr.dtype)
        if dtype.name not in _DTYPES:
            raise DTypeError(f"array {name!r}: dtype {dtype} cannot be stored; "
                             f"allowed: {sorted(_DTYPES)}")
        entries.append({"name": name, "dtype": dtype.name, "shape": [int(x) for x in arr.shape],
                        "offset": offset, "nbytes": int(arr.nbytes), "crc32": _CRC_PLACEHOLDER})
        offset += -(-int(arr.nbytes) // _ALIGN) * _ALIGN
    header_probe = json.dumps({"meta": meta, "arrays": entries}).encode()
    base = -(-(_PREFIX.size + len(header_probe) + 16 * len(entries) + 64) // _ALIGN) * _ALIGN
    for e in entries:
        e["offset"] += base
    end = max([base] + [e["offset"] + e["nbytes"] for e in entries])
    return entries, base, end


def _stream(meta: dict[str, Any], arrays: dict[str, np.ndarray | Chunked], base: int,
            entries: list[dict[str, Any]], put: Callable[[int, np.ndarray], None]) -> None:
    """Hand every array's bytes to ``put(offset, uint8 view)`` chunk by chunk, folding
    each chunk into the array's crc32, then the prefix and header (now complete)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="arrayfile-crc") as pool:
        for e, arr in zip(entries, arrays.values()):
            crc, done = 0, 0
            for chunk in (arr.chunks() if isinstance(arr, Chunked) else _chunks_of(arr)):
                b = _bytes(chunk)
                if done + b.shape[0] > e["nbytes"]:
                    break
                crc = _crc_into(b, crc, pool)
                put(e["offset"] + done, b)
                done += b.shape[0]
            if done != e["nbytes"]:
                raise ShapeError(f"array {e['name']!r}: its chunks hold {done} bytes or more, "
                                 f"not the {e['nbytes']} its shape and dtype declare")
            e["crc32"] = crc
    header = json.dumps({"meta": meta, "arrays": entries}).encode()
    if _PREFIX.size + len(header) > base:  # cannot happen: crc32s were wide placeholders
        raise CorruptCheckpointError("header outgrew the room reserved for it")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header), 0) + header
    put(0, np.frombuffer(head, dtype=np.uint8))


def encode_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray | Chunked]) -> bytes:
    """The container of ``arrays`` and JSON-able ``meta`` as bytes (same format as a file)."""
    entries, base, end = _layout(meta, arrays)
    out = np.zeros(end, dtype=np.uint8)

    def put(offset: int, b: np.ndarray) -> None:
        out[offset:offset + b.shape[0]] = b

    _stream(meta, arrays, base, entries, put)
    return out.tobytes()


class _Writer:
    """Positional writes of queued chunks on a thread of its own (``os.pwrite`` releases
    the GIL, so checksums and gathering on the caller's thread overlap the disk)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: BaseException | None = None
        self._q: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(_QUEUE)
        self._thread = threading.Thread(target=self._run, name="arrayfile-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if self.error is not None:
                continue
            offset, b = item
            try:
                view, start = memoryview(b), offset
                while view.nbytes:
                    n = os.pwrite(self.fd, view, offset)
                    view, offset = view[n:], offset + n
                # start writing this range back now (Linux), so the disk works while
                # later chunks are prepared instead of all at the final fsync; it also
                # keeps a checkpoint from crowding the page cache
                os.posix_fadvise(self.fd, start, offset - start, os.POSIX_FADV_DONTNEED)
            except BaseException as exc:  # handed to the caller by put / close
                self.error = exc

    def put(self, offset: int, b: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self._q.put((offset, b))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error


def write_arrays(path: str | os.PathLike[str], meta: dict[str, Any],
                 arrays: dict[str, np.ndarray | Chunked]) -> None:
    """Atomically write ``arrays`` (numpy arrays or :class:`Chunked` producers) and
    JSON-able ``meta`` to ``path``: temporary file, streamed chunks, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries, base, end = _layout(meta, arrays)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.ftruncate(fd, end)
            writer = _Writer(fd)
            try:
                _stream(meta, arrays, base, entries, writer.put)
            finally:
                writer.close()
            os.fsync(fd)
        finally:
            os.close(fd)
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


Into = Callable[[str, np.dtype, tuple[int, ...]], "np.ndarray | None"]
"""``into(name, dtype, shape)``: a C-contiguous array of that dtype and shape to read the
array into (a reader's own storage), or None for a new one."""
After = Callable[[str, np.ndarray], None]
"""``after(name, array)``: called once the array is read and its checksum verified."""


def read_arrays(path: str | os.PathLike[str], into: Into | None = None,
                after: After | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_arrays`.

    ``into`` may place arrays in the caller's storage (no copy afterwards); ``after``
    sees each verified array while the next ones are read. Raises
    :class:`CorruptCheckpointError` (bad magic, truncation, checksum) or
    :class:`CheckpointVersionError`; ``FileNotFoundError`` passes through.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        return _read_from(f, size, str(path), into, after)


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


def _read_from(f: Any, size: int, path: str, into: Into | None = None,
               after: After | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
        arr = None if into is None else into(name, np.dtype(dtype), tuple(shape))
        if arr is None or arr.dtype != np.dtype(dtype) or list(arr.shape) != shape \
                or not arr.flags.c_contiguous:
            arr = np.empty(shape, dtype=np.dtype(dtype))
        if _fill(f, offset, _bytes(arr), f"{path}: truncated while reading {name!r}") \
                != crc:
            raise CorruptCheckpointError(f"{path}: checksum mismatch in array {name!r}")
        arrays[name] = arr
        if after is not None:
            after(name, arr)
    return meta, arrays


def _fill(f: Any, offset: int, dest: np.ndarray, truncated: str) -> int:
    """Read ``dest.nbytes`` bytes at ``offset`` into ``dest`` (uint8) chunk by chunk and
    return their crc32; a chunk's checksum is computed on a helper thread while the next
    chunk is read (both release the GIL). Raises :class:`CorruptCheckpointError`
    (message ``truncated``) when the file ends early."""
    fd = f.fileno() if isinstance(f, io.BufferedReader) else None
    n = dest.shape[0]
    if fd is None or n <= CHUNK:
        f.seek(offset)
        if f.readinto(dest) != n:
            raise CorruptCheckpointError(truncated)
        return zlib.crc32(dest)
    crc = [0]
    halves = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arrayfile-crc2")

    def fold(b: np.ndarray) -> None:
        crc[0] = _crc_into(b, crc[0], halves)

    with halves, ThreadPoolExecutor(max_workers=1, thread_name_prefix="arrayfile-crc") as pool:
        for i in range(0, n, CHUNK):
            view = memoryview(dest[i:i + CHUNK])
            done = 0
            while done < view.nbytes:
                got = os.preadv(fd, [view[done:]], offset + i + done)
                if got <= 0:
                    raise CorruptCheckpointError(truncated)
                done += got
            pool.submit(fold, dest[i:i + CHUNK])
    return crc[0]
