"""A plain-Python reference of SparseTable semantics: a dict of rows, one key at a time.

Slow and obviously correct. Optimizer arithmetic and initial weights are delegated
to the library's per-row functions (tested on their own); everything else (admission,
capacity, access metadata, duplicate summing, eviction order, deltas) is re-implemented
here from the documented contract.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from kraken.table import LFU, LRU, TTL, Always, CountMin, Probabilistic, TableConfig
from kraken.table.admission import _SALTS

_M64 = (1 << 64) - 1


def fmix64(h: int) -> int:
    h &= _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    return h


@dataclasses.dataclass
class Row:
    w: np.ndarray
    s: np.ndarray
    last_seen: int
    count: np.float32


class ReferenceTable:
    def __init__(self, config: TableConfig) -> None:
        self.c = config
        self.rows: dict[int, Row] = {}
        adm = config.admission
        self.sketch = (np.zeros((adm.depth, adm.width), dtype=np.int64)
                       if isinstance(adm, CountMin) else None)
        self.rng = np.random.default_rng(config.seed)
        self.clock = 0
        self.counters = dict.fromkeys(
            ("lookups", "train_lookups", "admitted", "not_admitted", "rejected_full",
             "evicted", "updated_rows", "dropped_gradients"), 0)
        # The table keeps an access count only when an eviction policy reads it (LFU);
        # otherwise every count reads as zero.
        self.counts = any(isinstance(p, LFU) for p in config.eviction)
        # Keys whose row changed in any column (weights, state, last_seen, count) since
        # the last sync: what touched_since reports.
        self.changed: set[int] = set()
        self.evicted: set[int] = set()

    # -- helpers -------------------------------------------------------------------------

    def _new_row(self, key: int, now: int) -> Row:
        w = np.empty((1, self.c.dim), dtype=np.float32)
        self.c.initializer.fill(np.array([key], dtype=np.int64), self.c.seed, w)
        s = np.empty((1, self.c.state_width), dtype=np.float32)
        self.c.optimizer.init_state(s)
        return Row(w[0], s[0], now, np.float32(0.0))

    def _cms(self, key: int, count: int, threshold: int) -> bool:
        assert self.sketch is not None
        depth, width = self.sketch.shape
        cells = [fmix64((key & _M64) ^ int(_SALTS[d])) % width for d in range(depth)]
        est = min(int(self.sketch[d, h]) for d, h in enumerate(cells))
        new = min(est + count, 0xFFFFFFFF)
        for d, h in enumerate(cells):
            self.sketch[d, h] = max(int(self.sketch[d, h]), new)
        return new >= threshold

    # -- verbs ---------------------------------------------------------------------------

    def lookup(self, keys: list[int], train: bool, now: int | None) -> np.ndarray:
        self.counters["lookups"] += len(keys)
        if train:
            t = self.clock if now is None else now
            self.clock = max(self.clock, t)
            self.counters["train_lookups"] += len(keys)
            absent = collections.Counter(k for k in keys if k not in self.rows)
            uniq = list(absent)  # first-occurrence order
            counts = [absent[k] for k in uniq]
            adm = self.c.admission
            if isinstance(adm, Always):
                admit = [True] * len(uniq)
            elif isinstance(adm, Probabilistic):
                u = self.rng.random(len(uniq))
                admit = list(u < 1.0 - (1.0 - adm.p) ** np.array(counts, dtype=np.int64))
            else:
                admit = [self._cms(k, n, adm.threshold) for k, n in zip(uniq, counts)]
            for k, ok in zip(uniq, admit):
                if not ok:
                    self.counters["not_admitted"] += 1
                elif len(self.rows) >= self.c.capacity:
                    self.counters["rejected_full"] += 1
                else:
                    self.rows[k] = self._new_row(k, t)
                    self.changed.add(k)
                    self.counters["admitted"] += 1
            for k in keys:
                if k in self.rows:
                    self.rows[k].last_seen = t
                    self.changed.add(k)
                    if self.counts:
                        self.rows[k].count = np.float32(self.rows[k].count + np.float32(1))
        out = np.full((len(keys), self.c.dim), self.c.default_value, dtype=np.float32)
        for i, k in enumerate(keys):
            if k in self.rows:
                out[i] = self.rows[k].w
        return out

    def apply_gradients(self, keys: list[int], grads: np.ndarray, now: int) -> None:
        sums: dict[int, np.ndarray] = {}
        for k, g in zip(keys, grads):
            if k not in self.rows:
                self.counters["dropped_gradients"] += 1
                continue
            sums.setdefault(k, np.zeros(self.c.dim, dtype=np.float32))
            sums[k] += g
        for k, g in sums.items():
            row = self.rows[k]
            w, s = row.w[None].copy(), row.s[None].copy()
            self.c.optimizer.update(w, s, np.zeros(1, dtype=np.int64), g[None])
            row.w, row.s, row.last_seen = w[0], s[0], now
            self.changed.add(k)
        self.counters["updated_rows"] += len(sums)
        self.clock = max(self.clock, now)

    def assign(self, keys: list[int], values: np.ndarray, now: int | None) -> bool:
        """Returns False (and changes nothing) when the new keys do not fit."""
        t = self.clock if now is None else now
        if sum(k not in self.rows for k in keys) > self.c.capacity - len(self.rows):
            return False
        for k, v in zip(keys, values):
            if k not in self.rows:
                self.rows[k] = self._new_row(k, t)
            self.rows[k].w = v.copy()
            self.rows[k].last_seen = t
            self.changed.add(k)
        self.clock = max(self.clock, t)
        return True

    def evict(self, now: int) -> list[int]:
        self.clock = max(self.clock, now)
        victims: list[int] = []
        for pol in self.c.eviction:
            live = sorted(self.rows)
            if isinstance(pol, TTL):
                chosen = [k for k in live if now - self.rows[k].last_seen > pol.ttl]
            else:
                n = len(live)
                if n <= math.floor(pol.high_watermark * self.c.capacity):
                    chosen = []
                else:
                    n_out = n - math.floor(pol.low_watermark * self.c.capacity)
                    if isinstance(pol, LRU):
                        order = sorted(live, key=lambda k: (self.rows[k].last_seen, k))
                    else:
                        assert isinstance(pol, LFU)
                        order = sorted(live, key=lambda k: (float(self.rows[k].count), k))
                    chosen = order[:n_out]
            for k in chosen:
                del self.rows[k]
            victims += chosen
        for pol in self.c.eviction:
            if isinstance(pol, LFU):
                for k, row in self.rows.items():
                    decayed = np.float32(row.count * np.float32(pol.decay))
                    if decayed != row.count:
                        self.changed.add(k)
                    row.count = decayed
        self.counters["evicted"] += len(victims)
        self.evicted.update(victims)
        return sorted(victims)
