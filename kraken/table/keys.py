"""Namespacing feature IDs by field so several fields can share one physical table.

A 64-bit key is laid out as::

    bit 63 ........ 56 55 ............................................ 0
        [  field (8)  ][             id within the field (56)             ]

``field_keys(field, ids)`` keeps the low 56 bits of each id and puts the field in
the top 8 bits, so up to 256 fields share a table and IDs below ``2**56`` stay
collision-free. The layout is part of the on-disk and wire format: it never changes
(``KEY_LAYOUT_VERSION``).
"""

from __future__ import annotations

import numpy as np

from kraken.errors import InputError
from kraken.types import Keys

__all__ = ["FIELD_BITS", "ID_BITS", "KEY_LAYOUT_VERSION", "field_keys", "split_keys"]

KEY_LAYOUT_VERSION = 1
FIELD_BITS = 8
ID_BITS = 64 - FIELD_BITS
_ID_MASK = np.uint64((1 << ID_BITS) - 1)


def field_keys(field: int, ids: np.ndarray) -> Keys:
    """Namespace ``ids`` (any integer dtype, any shape) under ``field`` in ``[0, 256)``."""
    if not 0 <= field < (1 << FIELD_BITS):
        raise InputError(f"field must be in [0, {1 << FIELD_BITS}), got {field}")
    if ids.dtype.kind not in "iu":
        raise InputError(f"ids must be integers, got dtype {ids.dtype}")
    u = ids.astype(np.uint64, copy=False) & _ID_MASK
    return (u | (np.uint64(field) << np.uint64(ID_BITS))).view(np.int64)


def split_keys(keys: Keys) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`field_keys`: ``(field uint8[...], id int64[...])``."""
    u = keys.view(np.uint64)
    return (u >> np.uint64(ID_BITS)).astype(np.uint8), (u & _ID_MASK).astype(np.int64)
