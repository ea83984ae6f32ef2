"""Shard requests and replies as bytes: one :mod:`kraken.arrayfile` container each.

Every message is ``encode_arrays(meta, arrays)``: JSON ``meta`` (the verb's scalars) and
named arrays (``keys/<table>``, ``grads/<table>``, ``rows/<table>``, ...). Nothing is
pickled and nothing received is executed. Decoding checks the container (magic,
checksums, sizes) and then every field this module reads: a malformed request raises
:class:`~kraken.errors.InputError` naming the problem, before any shard state is touched.

A reply that carries an error has ``meta = {"error": {"type": name, "message": text}}``;
:func:`raise_error` raises it again on the client as the same
:class:`~kraken.errors.KrakenError` subclass (looked up by name in :mod:`kraken.errors`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from kraken import errors
from kraken.arrayfile import decode_arrays, encode_arrays
from kraken.errors import DTypeError, InputError, KrakenError, ShapeError, TransportError
from kraken.table import TableDelta, TableStats
from kraken.types import F32, Keys

__all__ = ["Message", "decode", "encode", "encode_error", "raise_error"]


@dataclasses.dataclass(frozen=True)
class Message:
    """A decoded message: JSON ``meta`` and named arrays, with checked accessors."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def field(self, name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        if name not in self.meta:
            if optional:
                return None
            raise InputError(f"malformed request: missing field {name!r}")
        value = self.meta[name]
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind is not bool:
            raise InputError(f"malformed request: field {name!r} must be {kind}, got a bool")
        if not isinstance(value, kind):
            raise InputError(f"malformed request: field {name!r} has type "
                             f"{type(value).__name__}")
        return value

    def tables(self) -> list[str]:
        names = self.field("tables", list)
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise InputError("malformed request: 'tables' must be distinct names")
        return names

    def keys(self, table: str) -> Keys:
        return self._array(f"keys/{table}", np.int64, 1)

    def values(self, prefix: str, table: str, n: int) -> F32:
        arr = self._array(f"{prefix}/{table}", np.float32, 2)
        if arr.shape[0] != n:
            raise ShapeError(f"{prefix}/{table} has {arr.shape[0]} rows for {n} keys")
        return arr

    def _array(self, name: str, dtype: type, ndim: int) -> np.ndarray:
        arr = self.arrays.get(name)
        if arr is None:
            raise InputError(f"malformed request: missing array {name!r}")
        if arr.dtype != dtype:
            raise DTypeError(f"{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
        if arr.ndim != ndim:
            raise ShapeError(f"{name} must have {ndim} dimension(s), got shape "
                             f"{list(arr.shape)}")
        return arr


def encode(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    return encode_arrays(dict(meta), dict(arrays or {}))


def decode(payload: bytes, where: str = "request") -> Message:
    """Parse a container; a damaged one raises :class:`InputError`."""
    try:
        meta, arrays = decode_arrays(payload, where)
    except KrakenError as exc:
        raise InputError(f"malformed {where}: {exc}") from exc
    return Message(meta, arrays)


def encode_error(exc: BaseException) -> bytes:
    kind = type(exc).__name__ if isinstance(exc, KrakenError) else "KrakenError"
    return encode({"error": {"type": kind, "message": str(exc)}})


def raise_error(msg: Message, where: str) -> None:
    """Raise the error a reply carries, if any, as its own class (prefixed by ``where``)."""
    err = msg.meta.get("error")
    if not err:
        return
    name = err.get("type") if isinstance(err, dict) else None
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, KrakenError)):
        cls = TransportError
    raise cls(f"{where}: {err.get('message') if isinstance(err, dict) else err}")


# -- typed payloads shared by the server and the client ---------------------------------

def encode_rows(rows: Mapping[str, F32], **meta: Any) -> bytes:
    return encode({"tables": list(rows), **meta}, {f"rows/{n}": r for n, r in rows.items()})


def encode_delta(d: TableDelta) -> bytes:
    return encode({"since": d.since, "version": d.version},
                  {"keys": d.keys, "weights": d.weights, "evicted": d.evicted})


def decode_delta(msg: Message) -> TableDelta:
    a = msg.arrays
    return TableDelta(since=int(msg.meta["since"]), version=int(msg.meta["version"]),
                      keys=a["keys"], weights=a["weights"], evicted=a["evicted"])


def stats_to_json(stats: Mapping[str, TableStats]) -> dict[str, Any]:
    return {n: dataclasses.asdict(s) for n, s in stats.items()}


def stats_from_json(doc: Mapping[str, Any]) -> dict[str, TableStats]:
    return {n: TableStats(**s) for n, s in doc.items()}
