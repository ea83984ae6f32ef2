"""Log entries (as a Redis stream returns them) to columns, checked; no I/O.

Entries arrive as :class:`EntryBlock` objects (one text, element offsets; ids ``"<ms>-<seq>"``).
A run of ``N`` entries of one kind becomes, for its valid rows::

    impressions  rid uint64[n]  ts int64[n]  features Batch (label 0, event_time = ts)
    actions      rid uint64[n]  ts int64[n]  kind int8[n] (index into action_types)

plus the ids and reasons of the malformed entries (missing or invalid ``rid``/``ts``/
``type``, a value over ``max_value_bytes``, an unparsable dense value). Features are
made by the functions the CSV source uses (:mod:`kraken.data._columns`), so a value
gets the same ID here as in a CSV file. Work is per column over the whole run (numpy,
pandas); the only per-element step is cutting out the values of the columns used (a
string slice each), and entries whose fields all come in one order (what a producer
writes) need nothing per entry beyond that.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from kraken.data._columns import RowProblems, categorical_ids, split_multi, to_number
from kraken.data.base import Batch
from kraken.data.logconfig import LogSchema

__all__ = ["Actions", "EntryBlock", "Impressions", "entry_ids", "format_id", "parse_actions",
           "parse_impressions"]

_U64_MAX = "18446744073709551615"


def entry_ids(ids: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ms uint64[N], seq uint64[N])`` of entry ids ``"<ms>-<seq>"``."""
    if len(ids) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    text = ",".join(ids).replace("-", ",")
    pairs = np.fromstring(text, dtype=np.uint64, sep=",").reshape(-1, 2)  # text parse, C
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def format_id(ms: int | np.integer, seq: int | np.integer) -> str:
    return f"{int(ms)}-{int(seq)}"


class EntryBlock:
    """``n`` entries as one text and the offsets of their elements, as a read returns
    them (see :mod:`kraken.data.redislog`): element ``first[i]`` is entry ``i``'s id and
    the ``nf[i]`` elements after it alternate field, value. ``text`` is a ``str`` when
    the reply was ASCII (offsets are then character offsets), else the raw ``bytes``.
    Elements are cut out only for the columns asked for."""

    def __init__(self, text: str | bytes, start: np.ndarray, length: np.ndarray,
                 first: np.ndarray, nf: np.ndarray, raw: bytes = b"") -> None:
        self.text, self.start, self.length, self.first, self.nf = text, start, length, first, nf
        self.raw = raw or (text if isinstance(text, bytes) else text.encode())
        self.ids = self.elements(first)

    @classmethod
    def from_reply(cls, blob: bytes, lengths: bytes, counts: bytes) -> EntryBlock:
        """From the script's reply: every element end to end, their byte lengths and the
        field-element count of every entry (comma-separated decimals)."""
        if not counts:
            z = np.zeros(0, np.int64)
            return cls("", z, z, z, z)
        length = np.fromstring(lengths.decode(), dtype=np.int64, sep=",")  # text parse, C
        nf = np.fromstring(counts.decode(), dtype=np.int64, sep=",")
        start = np.zeros(length.shape[0], np.int64)
        np.cumsum(length[:-1], out=start[1:])
        first = np.zeros(nf.shape[0], np.int64)
        np.cumsum(nf[:-1] + 1, out=first[1:])
        return cls(blob.decode("ascii") if blob.isascii() else blob, start, length, first, nf,
                   blob)

    @classmethod
    def from_entries(cls, entries: list[Any]) -> EntryBlock:
        """From ``[[id, [field, value, ...]], ...]`` (tests, and any other reader)."""
        elements = [x for e in entries for x in [e[0], *e[1]]]
        counts = ",".join(str(len(e[1])) for e in entries).encode()
        data = [x.encode() if isinstance(x, str) else x for x in elements]
        return cls.from_reply(b"".join(data), ",".join(str(len(x)) for x in data).encode(),
                              counts)

    def __len__(self) -> int:
        return int(self.first.shape[0])

    def slice(self, a: int, b: int) -> EntryBlock:
        """Entries ``[a, b)`` (sharing the text)."""
        out = EntryBlock.__new__(EntryBlock)
        out.text, out.start, out.length, out.raw = self.text, self.start, self.length, self.raw
        out.first, out.nf, out.ids = self.first[a:b], self.nf[a:b], self.ids[a:b]
        return out

    def elements(self, idx: np.ndarray) -> np.ndarray:
        """``object[...]`` of ``str``: the elements ``idx`` (any shape)."""
        flat = idx.reshape(-1)
        a, n = self.start[flat].tolist(), self.length[flat].tolist()
        t = self.text
        out = np.empty(flat.shape[0], dtype=object)
        if isinstance(t, str):
            out[:] = [t[i:i + k] for i, k in zip(a, n, strict=True)]
        else:
            out[:] = [t[i:i + k].decode("utf-8", "replace") for i, k in zip(a, n, strict=True)]
        return out.reshape(idx.shape)

    def _same_names(self, pos: np.ndarray) -> bool:
        """Whether elements ``pos int64[n, k]`` hold the same bytes in every row."""
        lens = self.length[pos]
        if not (lens == lens[0]).all():
            return False
        u8 = np.frombuffer(self.raw, dtype=np.uint8)
        for j in range(pos.shape[1]):
            b = u8[self.start[pos[:, j]][:, None] + np.arange(int(lens[0, j]))]
            if not (b == b[0]).all():
                return False
        return True

    def columns(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """``object[n]`` of ``str`` per name (``""`` where an entry lacks the field)."""
        n = len(self)
        width = int(self.nf[0]) if n else 0
        if n and width and (self.nf == width).all() and width % 2 == 0:
            pos = self.first[:, None] + 1 + np.arange(0, width, 2)
            if self._same_names(pos):  # one layout: what producers write
                where = {str(f): j for j, f in enumerate(self.elements(pos[0]))}
                return {name: self.elements(pos[:, where[name]] + 1) if name in where
                        else np.full(n, "", dtype=object) for name in names}
        rows = []
        for i in range(n):  # mixed layouts
            els = self.elements(self.first[i] + 1 + np.arange(int(self.nf[i])))
            rows.append(dict(zip(els[0::2], els[1::2], strict=False)))
        out = {}
        for name in names:
            col = np.empty(n, dtype=object)
            col[:] = [r.get(name, "") for r in rows]
            out[name] = col
        return out


def columns(blocks: list[EntryBlock], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The columns of several blocks end to end."""
    parts = [b.columns(names) for b in blocks if len(b)]
    if not parts:
        return {name: np.zeros(0, dtype=object) for name in names}
    return {name: np.concatenate([p[name] for p in parts]) for name in names}


def _oversized(col: np.ndarray, limit: int) -> np.ndarray:
    """``bool[N]``: the UTF-8 encoding of the value is longer than ``limit`` bytes."""
    lens = np.fromiter(map(len, col), dtype=np.int64, count=col.shape[0])
    big = lens > limit // 4  # 4 bytes per character at most
    if big.any():
        idx = np.flatnonzero(big)
        blen = np.fromiter((len(s.encode("utf-8", "surrogatepass")) for s in col[idx]),
                           dtype=np.int64, count=idx.shape[0])
        big[idx] = blen > limit
    return big


def _digits(col: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ok bool[N], text U[N])``: values of 1..max_len ASCII digits; the text is only
    meaningful where ``ok``."""
    lens = np.fromiter(map(len, col), dtype=np.int64, count=col.shape[0])
    ok = (lens >= 1) & (lens <= max_len)
    text = np.where(ok, col, "0").astype(f"U{max_len}")
    codes = text.view(np.uint32).reshape(text.shape[0], max_len)
    ok &= (((codes >= 48) & (codes <= 57)) | (codes == 0)).all(axis=1)  # NUL: padding
    return ok, text


def _request_ids(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rid uint64[N], bad bool[N])``: decimal unsigned 64-bit integers."""
    ok, text = _digits(col, 20)
    ok &= (np.char.str_len(text) < 20) | (text <= _U64_MAX)
    return np.where(ok, text, "0").astype(np.uint64), ~ok


def _times(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ts int64[N], bad bool[N])``: integers (optional leading ``-``), at most 18 digits."""
    neg = np.fromiter((s[:1] == "-" for s in col), dtype=bool, count=col.shape[0])
    body = col.copy()
    if neg.any():
        body[neg] = [s[1:] for s in col[neg]]
    ok, text = _digits(body, 18)
    value = np.where(ok, text, "0").astype(np.int64)
    return np.where(neg, -value, value), ~ok


@dataclasses.dataclass(frozen=True)
class Impressions:
    """Valid impressions of a run of entries; ``index int64[n]``: their positions in it."""

    rid: np.ndarray
    ts: np.ndarray
    features: Batch
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.rid.shape[0])


@dataclasses.dataclass(frozen=True)
class Actions:
    """Valid actions of a run of entries; ``kind`` indexes ``action_types``."""

    rid: np.ndarray
    ts: np.ndarray
    kind: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.rid.shape[0])


Malformed = tuple[np.ndarray, list[str]]  # (positions int64[k] in the run, reason each)


def _common(cols: dict[str, np.ndarray], n: int, limit: int) -> tuple[
        RowProblems, np.ndarray, np.ndarray]:
    problems = RowProblems(n)
    for name, col in cols.items():
        problems.add(f"value of {name} over {limit} bytes", _oversized(col, limit),
                     np.full(n, "<long>", dtype=object))
    rid, bad = _request_ids(cols["rid"])
    problems.add("invalid rid", bad, cols["rid"])
    ts, bad = _times(cols["ts"])
    problems.add("invalid ts", bad, cols["ts"])
    return problems, rid, ts


def parse_impressions(blocks: list[EntryBlock], schema: LogSchema, max_value_bytes: int,
                      ) -> tuple[Impressions, Malformed]:
    """The valid impressions of ``blocks`` featurized (see the module), and the rest
    (positions count entries across the blocks, in order)."""
    n = sum(len(b) for b in blocks)
    cols = columns(blocks, ("rid", "ts", *schema.columns))
    problems, rid, ts = _common(cols, n, max_value_bytes)
    dense = np.zeros((n, len(schema.dense)), dtype=np.float32)
    for j, name in enumerate(schema.dense):
        x, bad = to_number(pd.Series(cols[name], dtype=object))
        problems.add(f"unparsable {name}", bad, cols[name])
        dense[:, j] = np.nan_to_num(x, nan=0.0)
    ok = ~problems.bad
    keys = np.empty((int(ok.sum()), len(schema.categorical)), dtype=np.int64)
    for j, name in enumerate(schema.categorical):
        keys[:, j] = categorical_ids(j, cols[name][ok])
    jagged = {name: split_multi(len(schema.categorical) + k, cols[name][ok], schema.multi_sep)
              for k, name in enumerate(schema.multi_valued)}
    m = keys.shape[0]
    features = Batch(keys=keys, dense=dense[ok], label=np.zeros(m, np.float32),
                     event_time=ts[ok], jagged=jagged)
    good = Impressions(rid=rid[ok], ts=ts[ok], features=features, index=np.flatnonzero(ok))
    return good, (np.flatnonzero(~ok), problems.reasons())


def parse_actions(blocks: list[EntryBlock], action_types: tuple[str, ...],
                  max_value_bytes: int) -> tuple[Actions, Malformed]:
    """The valid actions of ``blocks`` (``kind`` int8 index into ``action_types``)."""
    n = sum(len(b) for b in blocks)
    cols = columns(blocks, ("rid", "ts", "type"))
    problems, rid, ts = _common(cols, n, max_value_bytes)
    kind = pd.Series(cols["type"], dtype=object).map(
        {t: i for i, t in enumerate(action_types)}).to_numpy(dtype=np.float64, na_value=-1)
    problems.add("unknown action type", kind < 0, cols["type"])
    ok = ~problems.bad
    good = Actions(rid=rid[ok], ts=ts[ok], kind=kind[ok].astype(np.int8),
                   index=np.flatnonzero(ok))
    return good, (np.flatnonzero(~ok), problems.reasons())
