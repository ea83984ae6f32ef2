"""Admission policies: which absent keys get a row when they are looked up in training.

A key that is not admitted reads as the table's default vector and its gradients
are dropped. Policies are frozen dataclasses (configuration); the per-table
mutable part (the count-min sketch) is created by :meth:`AdmissionPolicy.new_state`.

- :class:`Always`: every key seen in training gets a row.
- :class:`CountMin`: a key gets a row on its ``threshold``-th occurrence, counted
  in a count-min sketch with conservative update (never under-counts).
- :class:`Probabilistic`: each occurrence admits with probability ``p``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba as nb
import numpy as np

from kraken.config import Tagged, build_from_dict, check_fraction, check_int
from kraken.errors import InputError
from kraken.table.index import PREFETCH_DISTANCE, fmix64, prefetch
from kraken.types import Keys

__all__ = ["AdmissionPolicy", "Always", "CountMin", "Probabilistic", "admission_from_dict"]

_SALTS = np.array([0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0,
                   0x082EFA98EC4E6C89, 0x452821E638D01377, 0xBE5466CF34E90C6C,
                   0xC0AC29B7C97C50DD, 0x3F84D5B5B5470917], dtype=np.uint64)


@nb.njit(cache=True, nogil=True)
def _cms_cells(sketch, salts, keys):  # pragma: no cover - numba
    """``int64[N, depth]``: the sketch column of each key in each row (a power-of-two
    ``width`` masks, any other reduces modulo: the same column either way)."""
    depth, width = sketch.shape
    n = keys.shape[0]
    cells = np.empty((n, depth), dtype=np.int64)
    w = np.uint64(width)
    mask = np.uint64(width - 1)
    pow2 = (width & (width - 1)) == 0
    for i in range(n):
        k = np.uint64(keys[i])
        for d in range(depth):
            x = fmix64(k ^ salts[d])
            cells[i, d] = np.int64(x & mask) if pow2 else np.int64(x % w)
    return cells


@nb.njit(cache=True, nogil=True)
def _cms_add(sketch, salts, keys, counts, threshold, admit):  # pragma: no cover - numba
    """Conservative-update ``counts`` into the sketch; ``admit[i]`` = estimate >= threshold.

    Keys are taken in order (a key's update sees every earlier key's); the cells of key
    ``i + PREFETCH_DISTANCE`` are prefetched while key ``i`` is updated, so a batch's
    cache misses on the sketch overlap."""
    depth = sketch.shape[0]
    n = keys.shape[0]
    cells = _cms_cells(sketch, salts, keys)
    cap = np.uint32(0xFFFFFFFF)
    for i in range(n):
        j = i + PREFETCH_DISTANCE
        if j < n:
            for d in range(depth):
                prefetch(sketch[d], cells[j, d])
        est = cap
        for d in range(depth):
            v = sketch[d, cells[i, d]]
            if v < est:
                est = v
        new = np.uint64(est) + np.uint64(counts[i])
        if new > np.uint64(cap):
            new = np.uint64(cap)
        new32 = np.uint32(new)
        for d in range(depth):
            if sketch[d, cells[i, d]] < new32:
                sketch[d, cells[i, d]] = new32
        admit[i] = new >= threshold


@nb.njit(cache=True, nogil=True)
def _cms_query(sketch, salts, keys, out):  # pragma: no cover - numba
    depth = sketch.shape[0]
    n = keys.shape[0]
    cells = _cms_cells(sketch, salts, keys)
    for i in range(n):
        j = i + PREFETCH_DISTANCE
        if j < n:
            for d in range(depth):
                prefetch(sketch[d], cells[j, d])
        est = np.uint32(0xFFFFFFFF)
        for d in range(depth):
            v = sketch[d, cells[i, d]]
            if v < est:
                est = v
        out[i] = est


class AdmissionPolicy(Tagged):
    """Decides, for distinct absent keys and their occurrence counts, which get a row."""

    def new_state(self) -> np.ndarray | None:
        """Mutable per-table state (saved with the table), or None."""
        return None

    def decide(self, keys: Keys, counts: np.ndarray, state: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray:
        """``bool[U]``: admit each of the distinct absent ``keys`` (``counts: int64[U]``)."""
        raise NotImplementedError



@dataclasses.dataclass(frozen=True)
class Always(AdmissionPolicy):
    """Admit every key seen in training."""

    kind = "always"

    def decide(self, keys: Keys, counts: np.ndarray, state: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray:
        return np.ones(keys.shape[0], dtype=bool)


@dataclasses.dataclass(frozen=True)
class CountMin(AdmissionPolicy):
    """Admit a key on its ``threshold``-th occurrence in training lookups.

    The sketch uses ``depth * width * 4`` bytes; with ``n`` distinct keys counted
    the over-count is at most ``e * n / width`` with probability ``1 - e**-depth``.
    """

    threshold: int = 2
    width: int = 1 << 20
    depth: int = 4
    kind = "count_min"

    def __post_init__(self) -> None:
        check_int("threshold", self.threshold, lo=1)
        check_int("width", self.width, lo=1)
        check_int("depth", self.depth, lo=1, hi=len(_SALTS))

    def new_state(self) -> np.ndarray:
        return np.zeros((self.depth, self.width), dtype=np.uint32)

    def decide(self, keys: Keys, counts: np.ndarray, state: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray:
        if state is None:
            raise InputError("CountMin.decide needs the sketch made by CountMin.new_state(), "
                             "got None")
        admit = np.empty(keys.shape[0], dtype=np.bool_)
        _cms_add(state, _SALTS, keys, counts.astype(np.int64, copy=False), self.threshold, admit)
        return admit

    @staticmethod
    def estimate(state: np.ndarray, keys: Keys) -> np.ndarray:
        """``uint32[N]`` count estimates (upper bounds) of ``keys``."""
        out = np.empty(keys.shape[0], dtype=np.uint32)
        _cms_query(state, _SALTS, keys, out)
        return out


@dataclasses.dataclass(frozen=True)
class Probabilistic(AdmissionPolicy):
    """Admit on each occurrence with probability ``p`` (``1 - (1-p)**count`` per batch).

    Draws come from the table's seeded generator, so runs are reproducible.
    """

    p: float = 0.5
    kind = "probabilistic"

    def __post_init__(self) -> None:
        check_fraction("p", self.p)

    def decide(self, keys: Keys, counts: np.ndarray, state: np.ndarray | None,
               rng: np.random.Generator) -> np.ndarray:
        u = rng.random(keys.shape[0])
        return u < 1.0 - (1.0 - self.p) ** counts


_ADMISSIONS: dict[str, type[AdmissionPolicy]] = {
    c.kind: c for c in (Always, CountMin, Probabilistic)}


def admission_from_dict(d: dict[str, Any], path: str = "admission") -> AdmissionPolicy:
    """Inverse of ``AdmissionPolicy.to_dict``."""
    return build_from_dict(_ADMISSIONS, d, path)  # type: ignore[no-any-return]
