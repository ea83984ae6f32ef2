"""Argument checks shared by the sparse table's verbs: keys and times (versions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kraken.errors import DTypeError, InputError, ShapeError
from kraken.types import NOW_MAX, Keys

__all__ = ["as_keys", "as_now"]


def as_keys(keys: Any) -> tuple[Keys, tuple[int, ...]]:
    """``(flat, shape)``: ``keys`` (any integer array or nested list, shape ``[...]``) as
    C-contiguous ``int64[N]`` and its shape; uint64 keys keep their bits (viewed as int64).
    Raises :class:`ShapeError` for ragged input, :class:`DTypeError` for non-integers."""
    try:
        arr = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ShapeError(f"keys must be a rectangular integer array: {exc}") from None
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"keys must be an integer array, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        arr = arr.view(np.int64)
    flat = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    return flat, arr.shape


def as_now(now: Any, what: str = "now") -> int:
    """``now`` (or a table ``version``, with ``what="version"``) as an int in
    ``[0, NOW_MAX]``; raises :class:`InputError` otherwise (``bool`` included)."""
    if isinstance(now, bool) or not isinstance(now, (int, np.integer)):
        kind = "a table version" if what == "version" else "an integer step or timestamp"
        raise InputError(f"{what} must be {kind}, got {now!r}")
    if not 0 <= int(now) <= NOW_MAX:
        raise InputError(f"{what} must be in [0, {NOW_MAX}], got {now}")
    return int(now)
