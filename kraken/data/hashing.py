"""Stable hashing of raw feature values to 64-bit feature IDs.

``feature_ids(field, values)``:

- integer values in ``[0, 2**56)`` keep their value (collision-free);
- every other value (negative or huge integers, strings, bytes) is hashed with
  SipHash-2-4 under the fixed key ``HASH_KEY`` (pandas' ``hash_array``, a C
  implementation stable across runs, platforms and processes) and keeps 56 bits;
- the field index goes into the top 8 bits (:func:`kraken.table.field_keys`).

Missing values (``None``, NaN, empty string) hash to the per-field ID ``MISSING_ID``
so "missing" is a learnable feature of its own. ``HASH_VERSION`` names this scheme:
training and serving must use the same version (it is stored in checkpoints).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kraken.table.keys import ID_BITS, field_keys

__all__ = ["HASH_KEY", "HASH_VERSION", "MISSING_ID", "feature_ids"]

HASH_VERSION = 1
HASH_KEY = "kraken-feature-1"  # exactly 16 characters, as SipHash requires
MISSING_ID = (1 << ID_BITS) - 1
_ID_MASK = np.uint64((1 << ID_BITS) - 1)


def feature_ids(field: int, values: np.ndarray | pd.Series | list[object]) -> np.ndarray:
    """``int64[N]`` feature IDs of raw ``values`` (any dtype) in namespace ``field``."""
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.dtype.kind in "US" and not isinstance(values, np.ndarray):
        # numpy's fixed-width strings drop trailing NULs ("a\x00" would read "a"): keep
        # the Python strings themselves
        arr = np.asarray(values, dtype=object)
    if arr.dtype.kind in "iu":
        u = arr.astype(np.uint64, copy=False)
        small = (u < _ID_MASK) if arr.dtype.kind == "u" else (arr >= 0) & (u < _ID_MASK)
        if small.all():
            return field_keys(field, u)
        ids = np.where(small, u, pd.util.hash_array(arr, hash_key=HASH_KEY) & _ID_MASK)
        return field_keys(field, ids.astype(np.uint64))
    obj = arr.astype(object, copy=False)
    missing = pd.isna(obj) | (obj == "")
    # str() of each value, as objects (a trip through numpy's "U" dtype would drop
    # trailing NULs)
    text = pd.Series(np.where(missing, "", obj), dtype=object).astype(str).to_numpy(dtype=object)
    hashed = pd.util.hash_array(text, hash_key=HASH_KEY, categorize=True) & _ID_MASK
    hashed = np.where(missing, np.uint64(MISSING_ID), hashed)
    return field_keys(field, hashed.astype(np.uint64))
