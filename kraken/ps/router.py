"""Keys to shards: fixed virtual buckets over a well-mixed hash, buckets to shards by a table.

::

    bucket(key) = (splitmix64(key) >> 32) % B          B fixed per run (default 4096)
    shard(key)  = bucket_to_shard[bucket(key)]          int32[B], stored in the checkpoint

The feature field lives in a key's top 8 bits (:func:`kraken.field_keys`), so raw key
bits are never used for routing. The mixer is splitmix64's finaliser, deliberately a
different function from the hash index's ``fmix64``: a shard holds only the keys of its
buckets, and if both used the same hash those keys would share hash bits and crowd
into a fraction of the index's home slots.

Restoring onto a different number of shards only changes ``bucket_to_shard``; the
bucket of a key never changes for a given ``B``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba as nb
import numpy as np

from kraken.errors import ConfigError, InputError
from kraken.types import Keys

__all__ = ["DEFAULT_BUCKETS", "Router"]

DEFAULT_BUCKETS = 4096


@nb.njit(cache=True, nogil=True, inline="always")
def _mix(key):  # pragma: no cover - numba
    z = np.uint64(key) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def _buckets(keys, n_buckets):  # pragma: no cover - numba
    out = np.empty(keys.shape[0], dtype=np.int64)
    m = np.uint64(n_buckets)
    for i in range(keys.shape[0]):
        out[i] = np.int64((_mix(keys[i]) >> np.uint64(32)) % m)
    return out


@nb.njit(cache=True, nogil=True)
def _partition(keys, n_buckets, bucket_to_shard, n_shards):  # pragma: no cover - numba
    """Stable counting sort of key positions by shard: ``order[bounds[s]:bounds[s+1]]``
    are the positions of shard ``s``'s keys, in their original order."""
    n = keys.shape[0]
    shard = np.empty(n, dtype=np.int32)
    bounds = np.zeros(n_shards + 1, dtype=np.int64)
    m = np.uint64(n_buckets)
    for i in range(n):
        s = bucket_to_shard[np.int64((_mix(keys[i]) >> np.uint64(32)) % m)]
        shard[i] = s
        bounds[s + 1] += 1
    for s in range(n_shards):
        bounds[s + 1] += bounds[s]
    fill = bounds[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        s = shard[i]
        order[fill[s]] = i
        fill[s] += 1
    return order, bounds


@dataclasses.dataclass(frozen=True, eq=False)
class Router:
    """Routes int64 keys to ``n_shards`` shards through ``len(bucket_to_shard)`` buckets.

    Attributes:
        bucket_to_shard: ``int32[B]``, the shard of each bucket; every shard owns at
            least one bucket.
    """

    bucket_to_shard: np.ndarray

    def __post_init__(self) -> None:
        b = np.ascontiguousarray(self.bucket_to_shard, dtype=np.int32)
        if b.ndim != 1 or b.shape[0] < 1:
            raise ConfigError(f"ps.buckets: need at least one bucket, got shape {b.shape}")
        n = int(b.max()) + 1
        if int(b.min()) < 0 or np.unique(b).shape[0] != n:
            raise ConfigError("ps: the bucket table must give every shard 0..N-1 a bucket")
        b.setflags(write=False)
        object.__setattr__(self, "bucket_to_shard", b)

    @classmethod
    def uniform(cls, n_shards: int, buckets: int = DEFAULT_BUCKETS) -> Router:
        """Contiguous, balanced ranges: bucket ``b`` goes to shard ``b * n_shards // B``."""
        if not 1 <= n_shards <= buckets:
            raise ConfigError(f"ps.shards: need 1 <= shards <= buckets ({buckets}), "
                              f"got {n_shards}")
        return cls((np.arange(buckets, dtype=np.int64) * n_shards // buckets).astype(np.int32))

    @property
    def n_shards(self) -> int:
        return int(self.bucket_to_shard.max()) + 1

    @property
    def n_buckets(self) -> int:
        return int(self.bucket_to_shard.shape[0])

    def buckets(self, keys: Keys) -> np.ndarray:
        """``int64[N]``: the bucket of each key."""
        return _buckets(_as_keys(keys), self.n_buckets)

    def shard_of(self, keys: Keys) -> np.ndarray:
        """``int32[N]``: the shard of each key."""
        return self.bucket_to_shard[self.buckets(keys)]

    def partition(self, keys: Keys) -> tuple[np.ndarray, np.ndarray]:
        """``(order int64[N], bounds int64[S+1])``: ``keys[order[bounds[s]:bounds[s+1]]]``
        are shard ``s``'s keys in their original relative order (one O(N) pass)."""
        return _partition(_as_keys(keys), self.n_buckets, self.bucket_to_shard, self.n_shards)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for a checkpoint manifest."""
        return {"buckets": self.n_buckets, "bucket_to_shard": self.bucket_to_shard.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Router:
        try:
            table = np.asarray(d["bucket_to_shard"], dtype=np.int64)
            if table.shape != (int(d["buckets"]),):
                raise ValueError(f"{table.shape[0]} entries for {d['buckets']} buckets")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"ps.router: unreadable bucket table: {exc}") from exc
        return cls(table.astype(np.int32))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Router) and np.array_equal(self.bucket_to_shard,
                                                            other.bucket_to_shard)

    def __hash__(self) -> int:
        return hash(self.bucket_to_shard.tobytes())

    def __repr__(self) -> str:
        return f"Router(shards={self.n_shards}, buckets={self.n_buckets})"


def _as_keys(keys: Any) -> Keys:
    if not isinstance(keys, np.ndarray) or keys.dtype.kind not in "iu":
        raise InputError(f"keys must be an integer numpy array, got "
                         f"{getattr(keys, 'dtype', type(keys).__name__)}")
    if keys.dtype == np.uint64:
        keys = keys.view(np.int64)
    return np.ascontiguousarray(keys.reshape(-1), dtype=np.int64)
