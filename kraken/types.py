"""Array aliases used in signatures across Kraken.

Shape notation used in docstrings throughout the package:

- ``N``: number of keys in a batch (with duplicates)
- ``U``: number of unique keys in a batch
- ``D``: embedding dimension of a table
- ``S``: optimizer state width per row (floats)
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Keys: TypeAlias = npt.NDArray[np.int64]
"""int64[N]: 64-bit feature IDs. Every int64 value is a valid key."""

Rows: TypeAlias = npt.NDArray[np.int64]
"""int64[N]: row indices into a table's arena; -1 means absent."""

F32: TypeAlias = npt.NDArray[np.float32]
"""float32 array of any shape."""

Now: TypeAlias = int
"""A caller-supplied time: a step count or a timestamp, in ``[0, 2**31)``.

Tables never read a clock; every policy compares values of ``now``.
"""

NOW_MAX = 2**31 - 1
