"""Columnar rows of impressions for the joiner: a growing store and immutable chunks.

A row is one impression: ``rid uint64``, ``ts int64`` (event time, unix seconds),
``prior float32`` (the model's probability when it was first seen, NaN if unknown),
its sparse keys ``int64[F]``, dense values ``float32[D]`` and, per multi-valued field,
a variable number of ``int64`` values. The layout ``(F, D, jagged names)`` is fixed per
store.

:class:`Rows` is an immutable set of ``n`` rows (a :class:`~kraken.data.base.Batch`'s
feature columns plus rid/ts/prior). :class:`RowStore` appends rows at its end, keeps
them in arrival order, marks removed ones with a ``status`` of ``FREE`` and compacts
(gathering the live rows, order preserved) once dead rows outnumber live ones, so a
position is only valid until the next :meth:`RowStore.compact`. Multi-valued fields are
kept as one value buffer per field plus ``start``/``length`` per row::

    start   [0, 2, 2, 3]        row 0 -> vals[0:2], row 1 -> (none), row 2 -> vals[2:3],
    length  [2, 0, 1, 2]        row 3 -> vals[3:5]
    vals    [g1 g2 g3 g1 g4 . . .]   (capacity doubles as it fills)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.data.base import Jagged

__all__ = ["FREE", "RowStore", "Rows", "gather_jagged"]

FREE = -1
"""``status`` of a removed row (its position is reused only after compaction)."""


def gather_jagged(values: np.ndarray, start: np.ndarray, length: np.ndarray) -> Jagged:
    """The rows ``values[start[i]:start[i] + length[i]]`` concatenated, as a Jagged."""
    offsets = np.zeros(length.shape[0] + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    idx = np.repeat(start - offsets[:-1], length) + np.arange(total, dtype=np.int64)
    return Jagged(values[idx], offsets)


@dataclasses.dataclass(frozen=True)
class Rows:
    """``n`` rows: ``rid uint64[n]``, ``ts int64[n]``, ``prior float32[n]``,
    ``keys int64[n, F]``, ``dense float32[n, D]``, ``jagged {name: Jagged of n}``."""

    rid: np.ndarray
    ts: np.ndarray
    prior: np.ndarray
    keys: np.ndarray
    dense: np.ndarray
    jagged: dict[str, Jagged]

    def __len__(self) -> int:
        return int(self.rid.shape[0])

    def take(self, idx: np.ndarray) -> Rows:
        """Rows ``idx`` (an ``int64`` index array, any order) as new Rows."""
        jag = {k: gather_jagged(j.values, j.offsets[:-1][idx], j.lengths[idx])
               for k, j in self.jagged.items()}
        return Rows(self.rid[idx], self.ts[idx], self.prior[idx], self.keys[idx],
                    self.dense[idx], jag)

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        """``parts`` (at least one, same layout) one after the other."""
        if len(parts) == 1:
            return parts[0]
        jag = {}
        for name in parts[0].jagged:
            js = [p.jagged[name] for p in parts]
            lengths = np.concatenate([j.lengths for j in js])
            jag[name] = Jagged.from_lengths(np.concatenate([j.values for j in js]), lengths)
        return Rows(*(np.concatenate([getattr(p, f) for p in parts])
                      for f in ("rid", "ts", "prior", "keys", "dense")), jag)

    @staticmethod
    def empty(n_fields: int, n_dense: int, jagged: tuple[str, ...]) -> Rows:
        z = np.zeros(1, dtype=np.int64)
        return Rows(np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.float32),
                    np.empty((0, n_fields), np.int64), np.empty((0, n_dense), np.float32),
                    {k: Jagged(np.empty(0, np.int64), z.copy()) for k in jagged})


class RowStore:
    """Rows in arrival order with a per-row ``status int8`` (``FREE`` = removed).

    ``n`` positions are in use (live and dead); ``live`` of them are not FREE.
    """

    def __init__(self, n_fields: int, n_dense: int, jagged: tuple[str, ...]) -> None:
        self.n_fields, self.n_dense, self.jagged_names = n_fields, n_dense, tuple(jagged)
        self.n = 0
        self.live = 0
        self._alloc(0)

    def _alloc(self, cap: int) -> None:
        self.rid = np.empty(cap, np.uint64)
        self.ts = np.empty(cap, np.int64)
        self.prior = np.empty(cap, np.float32)
        self.status = np.full(cap, FREE, np.int8)
        self.keys = np.empty((cap, self.n_fields), np.int64)
        self.dense = np.empty((cap, self.n_dense), np.float32)
        self.jstart = {k: np.empty(cap, np.int64) for k in self.jagged_names}
        self.jlen = {k: np.empty(cap, np.int64) for k in self.jagged_names}
        self.jvals = {k: np.empty(0, np.int64) for k in self.jagged_names}
        self.jn = dict.fromkeys(self.jagged_names, 0)

    @property
    def capacity(self) -> int:
        return int(self.rid.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's buffers."""
        cols = [self.rid, self.ts, self.prior, self.status, self.keys, self.dense,
                *self.jstart.values(), *self.jlen.values(), *self.jvals.values()]
        return int(sum(a.nbytes for a in cols))

    def _grow(self, need: int) -> None:
        cap = max(1024, self.capacity)
        while cap < need:
            cap *= 2
        if cap == self.capacity:
            return
        for name in ("rid", "ts", "prior", "keys", "dense"):
            old = getattr(self, name)
            new = np.empty((cap, *old.shape[1:]), old.dtype)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)
        status = np.full(cap, FREE, np.int8)
        status[:self.n] = self.status[:self.n]
        self.status = status
        for d in (self.jstart, self.jlen):
            for k, old in d.items():
                new = np.empty(cap, np.int64)
                new[:self.n] = old[:self.n]
                d[k] = new

    def append(self, rows: Rows, status: int) -> np.ndarray:
        """Append ``rows`` with ``status``; returns their positions ``int64[n]``."""
        k = len(rows)
        if self.n + k > self.capacity:
            self._grow(self.n + k)
        a, b = self.n, self.n + k
        self.rid[a:b], self.ts[a:b], self.prior[a:b] = rows.rid, rows.ts, rows.prior
        self.keys[a:b], self.dense[a:b] = rows.keys, rows.dense
        self.status[a:b] = status
        for name, j in rows.jagged.items():
            nv = int(j.offsets[-1])
            buf, used = self.jvals[name], self.jn[name]
            if used + nv > buf.shape[0]:
                cap = max(1024, buf.shape[0])
                while cap < used + nv:
                    cap *= 2
                new = np.empty(cap, np.int64)
                new[:used] = buf[:used]
                self.jvals[name] = buf = new
            buf[used:used + nv] = j.values[j.offsets[0]:j.offsets[-1]]
            self.jstart[name][a:b] = used + j.offsets[:-1] - j.offsets[0]
            self.jlen[name][a:b] = np.diff(j.offsets)
            self.jn[name] = used + nv
        self.n = b
        self.live += k
        return np.arange(a, b, dtype=np.int64)

    def take(self, pos: np.ndarray) -> Rows:
        """The rows at positions ``pos`` (``int64``) as :class:`Rows` (copies)."""
        jag = {k: gather_jagged(self.jvals[k], self.jstart[k][pos], self.jlen[k][pos])
               for k in self.jagged_names}
        return Rows(self.rid[pos], self.ts[pos], self.prior[pos], self.keys[pos],
                    self.dense[pos], jag)

    def free(self, pos: np.ndarray) -> None:
        """Mark live positions ``pos`` (distinct) as removed."""
        self.status[pos] = FREE
        self.live -= int(pos.shape[0])

    def live_positions(self) -> np.ndarray:
        """Positions of the live rows, in arrival order."""
        return np.flatnonzero(self.status[:self.n] != FREE)

    def wants_compaction(self) -> bool:
        dead = self.n - self.live
        return dead > 4096 and dead > self.live

    def compact(self) -> np.ndarray:
        """Drop dead rows, order kept; returns the live rows' former positions (their new
        positions are ``0..live-1`` in that order)."""
        keep = self.live_positions()
        rows, status = self.take(keep), self.status[keep]
        self.n = self.live = 0
        self._alloc(0)
        self._grow(len(rows))
        self.append(rows, 0)
        self.status[:len(rows)] = status
        return keep
