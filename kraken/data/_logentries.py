"""Log entries (as a Redis stream returns them) to columns, checked; no I/O.

An entry is ``[id, [field, value, field, value, ...]]`` with text ids ``"<ms>-<seq>"``.
A run of ``N`` entries of one kind becomes, for its valid rows::

    impressions  rid uint64[n]  ts int64[n]  features Batch (label 0, event_time = ts)
    actions      rid uint64[n]  ts int64[n]  kind int8[n] (index into action_types)

plus the ids and reasons of the malformed entries (missing or invalid ``rid``/``ts``/
``type``, a value over ``max_value_bytes``, an unparsable dense value). Features are
made by the functions the CSV source uses (:mod:`kraken.data._columns`), so a value
gets the same ID here as in a CSV file. Work is per column over the whole run (numpy,
pandas); entries whose fields all come in one order (what a producer writes) take a
path without any per-entry step beyond building the reply.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from kraken.data._columns import RowProblems, categorical_ids, split_multi, to_number
from kraken.data.base import Batch
from kraken.data.logconfig import LogSchema

__all__ = ["Actions", "Impressions", "entry_ids", "format_id", "parse_actions",
           "parse_impressions"]

_U64_MAX = "18446744073709551615"


def entry_ids(ids: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ms uint64[N], seq uint64[N])`` of entry ids ``"<ms>-<seq>"``."""
    if len(ids) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    parts = np.char.partition(np.asarray(ids, dtype=str), "-")
    return parts[:, 0].astype(np.uint64), parts[:, 2].astype(np.uint64)


def format_id(ms: int | np.integer, seq: int | np.integer) -> str:
    return f"{int(ms)}-{int(seq)}"


def columns(entries: list[Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``object[N]`` of ``str`` per name (``""`` where an entry lacks the field)."""
    n = len(entries)
    out = {}
    fields = [e[1] for e in entries]
    width = len(fields[0]) if n else 0
    flat = None
    if n and width and all(len(f) == width for f in fields):
        flat = np.empty((n, width), dtype=object)
        flat[:] = fields
        order = flat[0, 0::2]
        if not (flat[:, 0::2] == order).all():
            flat = None
    if flat is not None:
        where = {str(k): i for i, k in enumerate(order)}
        for name in names:
            out[name] = flat[:, 2 * where[name] + 1] if name in where \
                else np.full(n, "", dtype=object)
        return out
    rows = [dict(zip(f[0::2], f[1::2], strict=False)) for f in fields]  # mixed layouts
    for name in names:
        col = np.empty(n, dtype=object)
        col[:] = [r.get(name, "") for r in rows]
        out[name] = col
    return out


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


def parse_impressions(entries: list[Any], schema: LogSchema, max_value_bytes: int,
                      ) -> tuple[Impressions, Malformed]:
    """The valid impressions of ``entries`` featurized (see the module), and the rest."""
    n = len(entries)
    cols = columns(entries, ("rid", "ts", *schema.columns))
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


def parse_actions(entries: list[Any], action_types: tuple[str, ...], max_value_bytes: int,
                  ) -> tuple[Actions, Malformed]:
    """The valid actions of ``entries`` (``kind`` int8 index into ``action_types``)."""
    n = len(entries)
    cols = columns(entries, ("rid", "ts", "type"))
    problems, rid, ts = _common(cols, n, max_value_bytes)
    kind = pd.Series(cols["type"], dtype=object).map(
        {t: i for i, t in enumerate(action_types)}).to_numpy(dtype=np.float64, na_value=-1)
    problems.add("unknown action type", kind < 0, cols["type"])
    ok = ~problems.bad
    good = Actions(rid=rid[ok], ts=ts[ok], kind=kind[ok].astype(np.int8),
                   index=np.flatnonzero(ok))
    return good, (np.flatnonzero(~ok), problems.reasons())
