"""Cutting a sequence of parsed parts into batches of a fixed size.

A :class:`Part` holds the valid rows parsed from a run of records; ``ends[i]`` is
the stream position just after row ``i`` (its record index + 1) and ``stop`` the
position after the whole run, malformed records included. A batch's ``offset`` is
``ends`` of its last row, except that the stream's last batch gets the last
``stop``: trailing malformed records are then consumed with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from kraken.data.base import Batch, Jagged
from kraken.errors import InputError


@dataclasses.dataclass(frozen=True)
class Part:
    """Valid rows of a run of records, laid out as a :class:`Batch` plus positions."""

    keys: np.ndarray
    dense: np.ndarray
    label: np.ndarray
    event_time: np.ndarray
    jagged: dict[str, Jagged]
    ends: np.ndarray
    stop: int

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def slice(self, a: int, b: int) -> Part:
        return Part(self.keys[a:b], self.dense[a:b], self.label[a:b], self.event_time[a:b],
                    {k: v.slice(a, b) for k, v in self.jagged.items()}, self.ends[a:b],
                    self.stop)


def check_batch_args(batch_size: object, start: object) -> None:
    """``batch_size`` must be an int >= 1 and ``start`` an int >= 0."""
    for name, value, lo in (("batch_size", batch_size, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {value!r}")


def _concat_jagged(parts: list[Jagged]) -> Jagged:
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p.values for p in parts])
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p in parts:
        offsets.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Jagged(values, np.concatenate(offsets))


def _batch(parts: list[Part], offset: int) -> Batch:
    if len(parts) == 1:
        p = parts[0]
        return Batch(keys=p.keys, dense=p.dense, label=p.label, event_time=p.event_time,
                     jagged=p.jagged, offset=offset)
    return Batch(keys=np.concatenate([p.keys for p in parts]),
                 dense=np.concatenate([p.dense for p in parts]),
                 label=np.concatenate([p.label for p in parts]),
                 event_time=np.concatenate([p.event_time for p in parts]),
                 jagged={k: _concat_jagged([p.jagged[k] for p in parts])
                         for k in parts[0].jagged},
                 offset=offset)


def rebatch(parts: Iterable[Part], batch_size: int) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows (the last may be short) from ``parts`` in order.

    A full batch is only cut once a row beyond it is known to exist, so the final
    batch is always recognised and carries the final ``stop``.
    """
    queue: list[Part] = []
    pending = 0
    stop = 0
    for part in parts:
        stop = part.stop
        if len(part):
            queue.append(part)
            pending += len(part)
        while pending > batch_size:
            queue, batch = _take(queue, batch_size, None)
            pending -= batch_size
            yield batch
    while pending:
        k = min(batch_size, pending)
        pending -= k
        queue, batch = _take(queue, k, stop if pending == 0 else None)
        yield batch


def _take(queue: list[Part], k: int, offset: int | None) -> tuple[list[Part], Batch]:
    taken: list[Part] = []
    while k:
        head = queue[0]
        if len(head) <= k:
            taken.append(head)
            queue = queue[1:]
            k -= len(head)
        else:
            taken.append(head.slice(0, k))
            queue = [head.slice(k, len(head)), *queue[1:]]
            k = 0
    last = taken[-1]
    return queue, _batch(taken, int(last.ends[-1]) if offset is None else offset)
