"""Delimited text files read as blocks of whole lines, with malformed-record reporting.

A *record* is one physical line after the optional header line, blank lines
included; record ``r`` is on line ``r + 1 + header_lines`` (1-based) of the file.
Blocks are cut at ``\\n``; ``\\r\\n`` is read as ``\\n``, a missing final newline is
supplied and a UTF-8 byte order mark is dropped. Field counts are computed for every
line with numpy, and only lines with the expected count are handed to pandas' C
parser, so a malformed line can never shift the columns of its neighbours.

Files ending in ``.gz`` are decompressed on the fly. Every ``OSError`` becomes a
:class:`~kraken.errors.DataError` naming the file.

A malformed record is reported as one line, ``PATH:LINE: skipped malformed WHAT record:
REASON``, to the ``kraken.data`` logger at WARNING level (so it is printed to stderr
whatever the warning filters, and an application routes it like any log line); the
first ``WARN_LIMIT`` of an iteration one by one, then one summary line.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from kraken.errors import DataError

BLOCK_BYTES = 1 << 22
SNIFF_LINES = 20
WARN_LIMIT = 10
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark before the first line is dropped
_UNIT_SEP = b"\x1f"  # stands in for a multi-byte separator such as MovieLens' "::"
LOGGER = logging.getLogger("kraken.data")


@dataclasses.dataclass(frozen=True)
class TextFormat:
    """How a delimited file is laid out: ``n_fields`` fields split by ``sep``.

    ``quoting`` allows ``"``-quoted fields (generic CSV); a quoted field may hold
    the separator but not a newline.
    """

    what: str
    sep: bytes
    n_fields: int
    encoding: str = "utf-8"
    quoting: bool = False

    @property
    def sep_name(self) -> str:
        return {b"\t": "tab", b",": "comma"}.get(self.sep, repr(self.sep.decode()))

    @property
    def parse_sep(self) -> bytes:
        return self.sep if len(self.sep) == 1 else _UNIT_SEP


@dataclasses.dataclass(frozen=True)
class LineBlock:
    """Lines ``[first, first + n)`` of a file; ``data`` is their bytes, ``\\n``-terminated.

    ``starts``/``ends`` are ``int64[n]`` byte offsets of each line and of its ``\\n``;
    ``n_fields`` is ``int64[n]``. ``rows`` holds the csv-parsed lines when the block
    needed the quote-aware slow path, else ``None``.
    """

    data: bytes
    first: int
    starts: np.ndarray
    ends: np.ndarray
    n_fields: np.ndarray
    rows: list[list[str]] | None = None

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def stop(self) -> int:
        return self.first + len(self)

    def records(self) -> np.ndarray:
        return np.arange(self.first, self.stop, dtype=np.int64)

    def tail(self, k: int) -> LineBlock:
        """The block without its first ``k`` lines."""
        if k == 0:
            return self
        cut = int(self.starts[k]) if k < len(self) else len(self.data)
        return LineBlock(self.data[cut:], self.first + k, self.starts[k:] - cut,
                         self.ends[k:] - cut, self.n_fields[k:],
                         None if self.rows is None else self.rows[k:])


def check_file(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it names an existing regular file, else :class:`DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a file")
    return p


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes (``.gz`` decompressed); OS errors become DataError."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, expected a file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc}") from exc


def first_lines(path: Path, n: int) -> list[bytes]:
    """Up to ``n`` first lines of ``path`` without their line ends."""
    out: list[bytes] = []
    with open_binary(path) as f:
        try:
            for line in f:
                out.append(line.rstrip(b"\r\n").removeprefix(_BOM if not out else b""))
                if len(out) == n:
                    break
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read: {exc}") from exc
    return out


def count_fields(line: bytes, fmt: TextFormat) -> int:
    """Fields on one line (``line`` without its line end); per-line, for sniffing only."""
    if fmt.quoting and b'"' in line:
        return len(next(csv.reader([line.decode(fmt.encoding, "replace")],
                                   delimiter=fmt.sep.decode())))
    return line.count(fmt.sep) + 1


def check_shape(path: Path, fmt: TextFormat, header_lines: int) -> None:
    """Raise :class:`DataError` if none of the first data lines has ``fmt.n_fields`` fields."""
    lines = first_lines(path, SNIFF_LINES + header_lines)[header_lines:]
    counts = [count_fields(line, fmt) for line in lines]
    if counts and fmt.n_fields not in counts:
        raise DataError(
            f"{path}: not in {fmt.what} format: expected {fmt.n_fields} {fmt.sep_name}-separated "
            f"fields per line, but the first {len(counts)} data line(s) have "
            f"{sorted(set(counts))} fields")


def read_blocks(path: Path, fmt: TextFormat, *, header_lines: int = 0, start: int = 0,
                block_bytes: int = BLOCK_BYTES) -> Iterator[LineBlock]:
    """Blocks of whole lines from record ``start`` on; lines before it are counted, not parsed."""
    with open_binary(path) as f:
        rest, first, skip, at_start = b"", 0, header_lines, True
        while True:
            try:
                data = f.read(block_bytes)
            except (OSError, EOFError) as exc:
                raise DataError(f"{path}: cannot read: {exc}") from exc
            buf = rest + data
            if at_start and (len(buf) >= len(_BOM) or not data):
                buf, at_start = buf.removeprefix(_BOM), False
            if not data:
                if not buf:
                    return
                chunk, rest = (buf if buf.endswith(b"\n") else buf + b"\n"), b""
            else:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    rest = buf
                    continue
                chunk, rest = buf[:cut], buf[cut:]
            while skip and chunk:
                chunk = chunk[chunk.index(b"\n") + 1:]
                skip -= 1
            n = chunk.count(b"\n")
            if first + n > start:
                block = _index(chunk, fmt, first)
                yield block.tail(max(0, start - first))
            first += n
            if not data:
                return


def _index(chunk: bytes, fmt: TextFormat, first: int) -> LineBlock:
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    if len(fmt.sep) > 1:
        chunk = chunk.replace(fmt.sep, _UNIT_SEP)
    arr = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10).astype(np.int64)
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    if fmt.quoting and b'"' in chunk:
        text = chunk.decode(fmt.encoding, "replace").split("\n")[:-1]
        rows = [next(csv.reader([t], delimiter=fmt.sep.decode())) if t else [""] for t in text]
        n_fields = np.array([len(r) for r in rows], dtype=np.int64)
        return LineBlock(chunk, first, starts, ends, n_fields, rows)
    seps = np.flatnonzero(arr == fmt.parse_sep[0])
    n_fields = (np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1).astype(np.int64)
    return LineBlock(chunk, first, starts, ends, n_fields)


def parse_lines(block: LineBlock, fmt: TextFormat, good: np.ndarray, names: list[str],
                usecols: list[str], str_cols: list[str]) -> pd.DataFrame:
    """The ``good`` lines of ``block`` as a DataFrame with columns ``usecols``.

    ``str_cols`` are read as ``str`` objects, empty ones as ``""``; other columns get
    pandas' numeric inference, empty fields as NaN. Nothing else counts as missing.
    """
    n_good = int(good.sum())
    if block.rows is not None:
        rows = [r for r, g in zip(block.rows, good) if g]
        frame = pd.DataFrame(rows, columns=names, dtype=object) if rows else \
            pd.DataFrame({c: pd.Series([], dtype=object) for c in names})
        numeric = [c for c in usecols if c not in str_cols]
        frame = frame[usecols].copy()
        frame[numeric] = frame[numeric].replace("", np.nan)
        return frame
    if n_good == len(block):
        data = block.data
    else:
        byte_mask = np.repeat(good, block.ends - block.starts + 1)
        data = np.frombuffer(block.data, dtype=np.uint8)[byte_mask].tobytes()
    if not data:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in usecols})
    frame = pd.read_csv(
        io.BytesIO(data), sep=fmt.parse_sep.decode(), header=None, names=names,
        usecols=usecols, dtype=dict.fromkeys(str_cols, object), keep_default_na=False,
        na_values={c: [""] for c in usecols if c not in str_cols}, quoting=csv.QUOTE_NONE,
        lineterminator="\n", encoding=fmt.encoding, encoding_errors="replace",
        skip_blank_lines=False, engine="c", low_memory=False)
    if len(frame) != n_good:  # cannot happen for lines with the right field count
        raise DataError(f"internal: parsed {len(frame)} rows from {n_good} lines "
                        f"at records {block.first}..{block.stop - 1}")
    return frame[usecols]


def shape_reasons(block: LineBlock, fmt: TextFormat, bad: np.ndarray) -> list[str]:
    """Messages for the lines of ``block`` whose field count is wrong."""
    return [f"expected {fmt.n_fields} {fmt.sep_name}-separated fields, got {k}"
            for k in block.n_fields[bad]]


class MalformedReporter:
    """Counts the malformed records of one iteration and logs the first ``limit`` (one
    line each, to :data:`LOGGER`); ``close`` logs a summary of the rest."""

    def __init__(self, path: Path, what: str, header_lines: int = 0,
                 limit: int = WARN_LIMIT, *, rows: bool = False) -> None:
        self.path, self.what, self.header_lines, self.limit = path, what, header_lines, limit
        self.rows = rows  # name positions "row N" (Parquet) instead of "path:line"
        self.count = 0

    def report(self, records: np.ndarray, reasons: list[str]) -> None:
        """Report malformed records (record indices, any order) with one reason each."""
        order = np.argsort(records, kind="stable")
        for i in order[: max(0, self.limit - self.count)]:
            n = int(records[i]) + 1 + self.header_lines
            where = f"{self.path}: row {n}" if self.rows else f"{self.path}:{n}"
            LOGGER.warning("%s: skipped malformed %s record: %s", where, self.what, reasons[i])
        self.count += int(records.shape[0])

    def close(self) -> None:
        """Log once about the records that were counted but not reported one by one."""
        if self.count > self.limit:
            LOGGER.warning("%s: %d malformed %s records skipped in all; only the first %d "
                           "were reported one by one", self.path, self.count, self.what,
                           self.limit)
