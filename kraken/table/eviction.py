"""Eviction policies: which live rows lose their row at ``evict(now)``.

Policies are frozen dataclasses; ``now`` always comes from the caller. Ties are
broken by key (smallest first), so the victims are a pure function of the table's
observable state.

- :class:`TTL`: every row not seen for more than ``ttl`` (``now - last_seen > ttl``).
- :class:`LRU`: when live rows pass ``high_watermark * capacity``, the least recently
  seen rows until ``low_watermark * capacity`` remain.
- :class:`LFU`: the same watermarks, by access count; counts of surviving rows are
  multiplied by ``decay`` at each eviction pass, so the count is a decayed frequency.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from kraken.config import Tagged, build_from_dict, check_fraction, check_int
from kraken.errors import ConfigError
from kraken.types import Keys

__all__ = ["LFU", "LRU", "TTL", "EvictionPolicy", "eviction_from_dict", "k_smallest"]


def k_smallest(score: np.ndarray, keys: Keys, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``(score, key)`` pairs, in O(N) plus a sort of the ties."""
    n = score.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    thr = np.partition(score, k - 1)[k - 1]
    below = np.flatnonzero(score < thr)
    ties = np.flatnonzero(score == thr)
    ties = ties[np.argsort(keys[ties], kind="stable")[: k - below.shape[0]]]
    return np.concatenate([below, ties])


class EvictionPolicy(Tagged):
    """Chooses victims among live rows.

    ``select`` gets the live rows' ``keys: int64[L]``, ``last_seen: int32[L]`` and
    ``count: float32[L]`` and returns indices into them (int64, no duplicates).

    ``reads_count``: whether the policy reads ``count`` (or changes it in ``after_pass``).
    A table keeps a per-row access count (4 bytes a row) only when one of its policies
    does; otherwise ``count`` reads as zeros.
    """

    reads_count: ClassVar[bool] = False

    def select(self, keys: Keys, last_seen: np.ndarray, count: np.ndarray, now: int,
               capacity: int) -> np.ndarray:
        raise NotImplementedError

    def after_pass(self, count: np.ndarray) -> None:
        """Hook run on the surviving rows' counts after every eviction pass."""

    def idle(self, live: int, capacity: int) -> bool:
        """Whether a pass over ``live`` rows of a table of ``capacity`` is known, from those
        two numbers alone, to select nothing and leave every count as it is (a table then
        skips the pass: no scan of its rows). False unless a policy can tell."""
        return False


@dataclasses.dataclass(frozen=True)
class TTL(EvictionPolicy):
    """Evict rows unseen for more than ``ttl`` units of ``now``."""

    ttl: int = 86400
    kind = "ttl"

    def __post_init__(self) -> None:
        check_int("ttl", self.ttl, lo=0)

    def select(self, keys: Keys, last_seen: np.ndarray, count: np.ndarray, now: int,
               capacity: int) -> np.ndarray:
        return np.flatnonzero(np.int64(now) - last_seen.astype(np.int64) > self.ttl)


@dataclasses.dataclass(frozen=True)
class _Watermarks(EvictionPolicy):
    high_watermark: float = 0.95
    low_watermark: float = 0.85

    def __post_init__(self) -> None:
        check_fraction("high_watermark", self.high_watermark)
        check_fraction("low_watermark", self.low_watermark)
        if self.low_watermark > self.high_watermark:
            raise ConfigError(f"low_watermark: must be <= high_watermark ({self.high_watermark}), "
                              f"got {self.low_watermark}")

    def idle(self, live: int, capacity: int) -> bool:
        return self._n_victims(live, capacity) == 0 and not self.reads_count

    def _n_victims(self, live: int, capacity: int) -> int:
        if live <= math.floor(self.high_watermark * capacity):
            return 0
        return live - math.floor(self.low_watermark * capacity)


@dataclasses.dataclass(frozen=True)
class LRU(_Watermarks):
    """Past the high watermark, evict least recently seen rows down to the low watermark."""

    kind = "lru"

    def select(self, keys: Keys, last_seen: np.ndarray, count: np.ndarray, now: int,
               capacity: int) -> np.ndarray:
        return k_smallest(last_seen, keys, self._n_victims(keys.shape[0], capacity))


@dataclasses.dataclass(frozen=True)
class LFU(_Watermarks):
    """Past the high watermark, evict least frequently seen rows down to the low watermark.

    ``decay`` in ``[0, 1]`` multiplies every surviving count after each pass
    (1.0 keeps plain counts).
    """

    decay: float = 0.5
    kind = "lfu"
    reads_count: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("decay", self.decay)

    def select(self, keys: Keys, last_seen: np.ndarray, count: np.ndarray, now: int,
               capacity: int) -> np.ndarray:
        return k_smallest(count, keys, self._n_victims(keys.shape[0], capacity))

    def after_pass(self, count: np.ndarray) -> None:
        count *= np.float32(self.decay)


_EVICTIONS: dict[str, type[EvictionPolicy]] = {c.kind: c for c in (TTL, LRU, LFU)}


def eviction_from_dict(d: dict[str, Any], path: str = "eviction") -> EvictionPolicy:
    """Inverse of ``EvictionPolicy.to_dict``."""
    return build_from_dict(_EVICTIONS, d, path)  # type: ignore[no-any-return]
