"""The log source's position: what a checkpoint stores to resume exactly after the last
batch yielded (see :mod:`kraken.data.redislog` and docs/streaming.md).

A position is plain arrays (``dict[str, ndarray]``)::

    log.id        uint64[K, 2]  per key read: (ms, seq) of the last entry fed to the joiner
    log.read      int64[K]      per key: its entries up to that id, trimmed ones included
    log.layout    int64[3]      (partitions, rank, world) of the stream that took it
    log.counters  int64[C]      the stream's counters, in the order of COUNTERS
    join.*                      the joiner's state (Joiner.state)
    ready.*                     the samples decided but not yet yielded: their batch
                                (batch_state), request ids uint64[R], kinds int8[R]

plus, with ``[log] audit``, the audit trail's token (:mod:`kraken.data._logaudit`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.data._batchstate import batch_from_state, batch_state, concat_batches
from kraken.data._logkeys import KeyState
from kraken.data.base import Batch, Schema
from kraken.errors import ConfigError, InputError

__all__ = ["COUNTERS", "Position", "Ready", "position_state", "read_position"]

COUNTERS = ("entries", "malformed", "lost", "outages", "claimed")
"""The stream's own counters, in the order a position stores them."""


@dataclasses.dataclass(frozen=True)
class Ready:
    """Samples decided, not yet yielded: the batch and each sample's request id and
    :class:`~kraken.data.join.SampleKind`."""

    batch: Batch
    rid: np.ndarray
    kind: np.ndarray


@dataclasses.dataclass(frozen=True)
class Position:
    """A position read back: per key ``ids[i] = (ms, seq)`` and ``reads[i]`` (entries up
    to it), the counters (missing ones 0), the joiner's state and the ready samples."""

    ids: list[tuple[int, int]]
    reads: list[int]
    counters: dict[str, int]
    join: dict[str, np.ndarray]
    ready: Ready


def position_state(keys: list[KeyState], layout: list[int], counters: dict[str, int],
                   join: dict[str, np.ndarray], ready: list[Ready],
                   schema: Schema) -> dict[str, np.ndarray]:
    """The position of a stream fed up to ``keys``' positions, whose joiner's state is
    ``join`` and whose undelivered samples are ``ready`` (``layout``: partitions, rank,
    world)."""
    state = {"log.id": np.array([k.pos for k in keys], dtype=np.uint64),
             "log.read": np.array([k.read for k in keys], dtype=np.int64),
             "log.layout": np.array(layout, dtype=np.int64),
             "log.counters": np.array([counters[c] for c in COUNTERS], dtype=np.int64)}
    state.update({f"join.{k}": v for k, v in join.items()})
    state.update(batch_state("ready", concat_batches([r.batch for r in ready], schema)))
    state["ready.rid"] = np.concatenate([np.zeros(0, np.uint64)] + [r.rid for r in ready])
    state["ready.kind"] = np.concatenate([np.zeros(0, np.int8)] + [r.kind for r in ready])
    return state


def read_position(state: dict[str, np.ndarray], n_keys: int, layout: list[int],
                  schema: Schema) -> Position:
    """``state`` (a :func:`position_state`) for a stream of ``n_keys`` keys and ``layout``.

    Raises :class:`ConfigError` if it was taken with another layout, :class:`InputError`
    if it is not a position of such a stream."""
    theirs = [int(x) for x in state.get("log.layout", [])]
    if theirs != layout:
        raise ConfigError(f"log.partitions: the position was taken with (partitions, "
                          f"rank, world) = {tuple(theirs)}, this stream reads "
                          f"{tuple(layout)}")
    try:
        ids = np.asarray(state["log.id"], dtype=np.uint64).reshape(n_keys, 2)
        reads = np.asarray(state["log.read"], dtype=np.int64).reshape(n_keys)
        counters = [int(x) for x in state["log.counters"]]
        join = {k[5:]: v for k, v in state.items() if k.startswith("join.")}
        ready = Ready(batch_from_state("ready", state, schema),
                      np.asarray(state["ready.rid"], np.uint64),
                      np.asarray(state["ready.kind"], np.int8))
    except (KeyError, ValueError) as exc:
        raise InputError(f"not a position of this log stream: {exc}") from None
    return Position(ids=[(int(ms), int(seq)) for ms, seq in ids],
                    reads=[int(r) for r in reads],
                    counters={**dict.fromkeys(COUNTERS, 0),
                              **dict(zip(COUNTERS, counters, strict=False))},
                    join=join, ready=ready)
