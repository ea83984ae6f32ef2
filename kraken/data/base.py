"""Columnar batches and the stream contract.

Shape notation: ``B`` samples, ``F`` single-valued sparse fields, ``Dd`` dense
features, ``nnz`` values of a multi-valued field across the batch.

A batch of ``B = 3`` samples with fields ``user, item`` and a multi-valued
``genres`` field looks like::

    keys        int64[3, 2]   [[u1, i7], [u2, i7], [u1, i9]]    (already 64-bit feature IDs)
    jagged      {"genres": Jagged(values=[g1, g2, g3, g1], offsets=[0, 2, 3, 4])}
                              sample 0 -> g1 g2 | sample 1 -> g3 | sample 2 -> g1
    dense       float32[3, Dd]
    label       float32[3]     0/1 click
    event_time  int64[3]       unix seconds (or a step counter for streams without time)
    offset      int            stream position after this batch (records consumed)

Feature IDs are namespaced by field with :func:`kraken.table.field_keys` (field
index = position in ``Schema.fields``), so all fields may share one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from kraken.errors import InputError, ShapeError

if TYPE_CHECKING:  # features.py builds on Schema, defined here
    from kraken.data.features import FeatureSpec

__all__ = ["Batch", "Jagged", "LogStream", "Schema", "Stream", "validate_batch"]


@dataclasses.dataclass(frozen=True)
class Jagged:
    """A multi-valued field: ``values int64[nnz]`` and ``offsets int64[B + 1]``."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> Jagged:
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(values.astype(np.int64, copy=False), offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def slice(self, start: int, stop: int) -> Jagged:
        """Samples ``[start, stop)`` as a new Jagged (offsets rebased to 0)."""
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return Jagged(self.values[lo:hi], self.offsets[start: stop + 1] - lo)


@dataclasses.dataclass(frozen=True)
class Schema:
    """Names of a stream's features; field ``i`` of ``fields`` is namespaced as field ``i``.

    ``fields`` lists single-valued fields in column order of ``Batch.keys``, then
    ``jagged`` lists multi-valued fields (their namespace index continues after
    ``fields``); ``dense`` names the dense columns.
    """

    fields: tuple[str, ...]
    jagged: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()

    def field_index(self, name: str) -> int:
        """Namespace index of a sparse field (single or multi-valued)."""
        names = self.fields + self.jagged
        if name not in names:
            raise InputError(f"unknown field {name!r}; fields are {list(names)}")
        return names.index(name)


@dataclasses.dataclass(frozen=True)
class Batch:
    """One columnar batch (see the module docstring for the layout)."""

    keys: np.ndarray
    dense: np.ndarray
    label: np.ndarray
    event_time: np.ndarray
    jagged: dict[str, Jagged] = dataclasses.field(default_factory=dict)
    offset: int = 0
    prior: np.ndarray | None = None
    """``float32[B]`` or None: the model's click probability for each sample when its
    impression was first seen (NaN where unknown); progressive evaluation scores it
    instead of the training forward's where it is finite (delayed-label streams)."""
    fresh: Batch | None = None
    """None, or impressions first seen with this batch, whose labels are not known yet:
    the trainer predicts them with the model of this moment (no learning) and hands the
    probabilities back to the stream (:meth:`LogStream.scored`), which returns them as
    ``prior`` when the labelled sample comes."""

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def slice(self, start: int, stop: int) -> Batch:
        """Samples ``[start, stop)``; ``offset`` is left as the whole batch's."""
        prior = self.prior[start:stop] if self.prior is not None else None
        return Batch(keys=self.keys[start:stop], dense=self.dense[start:stop],
                     label=self.label[start:stop], event_time=self.event_time[start:stop],
                     jagged={k: v.slice(start, stop) for k, v in self.jagged.items()},
                     offset=self.offset, prior=prior)


def validate_batch(batch: Batch, schema: Schema) -> None:
    """Full structural check, kept out of the hot path; errors state the actual numbers."""
    b = batch.label.shape[0]
    checks = [("keys", batch.keys, (b, len(schema.fields)), np.int64),
              ("dense", batch.dense, (b, len(schema.dense)), np.float32),
              ("label", batch.label, (b,), np.float32),
              ("event_time", batch.event_time, (b,), np.int64)]
    for name, arr, shape, dtype in checks:
        if arr.shape != shape or arr.dtype != dtype:
            raise ShapeError(f"batch.{name}: expected {np.dtype(dtype).name}{list(shape)}, "
                             f"got {arr.dtype}{list(arr.shape)}")
    if sorted(batch.jagged) != sorted(schema.jagged):
        raise ShapeError(f"batch.jagged: fields {sorted(batch.jagged)}, "
                         f"schema has {sorted(schema.jagged)}")
    for name, jag in batch.jagged.items():
        o = jag.offsets
        bad = o.shape != (b + 1,) or o[0] != 0 or o[-1] != jag.values.shape[0]
        if bad or (np.diff(o) < 0).any():
            raise ShapeError(f"batch.jagged[{name!r}]: offsets must be int64[{b + 1}] from 0 to "
                             f"{jag.values.shape[0]}, non-decreasing; got {o.shape} "
                             f"[{o[0] if o.size else '-'}..{o[-1] if o.size else '-'}]")


@runtime_checkable
class Stream(Protocol):
    """An iterable of batches that knows its features and can resume from an offset.

    ``offset`` counts records consumed (malformed ones included), so a stream
    restarted with ``start=batch.offset`` continues right after ``batch``.
    ``skipped`` counts the malformed records skipped by the latest ``batches`` iteration
    (a new iteration starts from 0). ``features`` says how raw values become the batch's
    IDs and dense values, so a server can featurize requests exactly as the stream does;
    its ``schema`` equals the stream's.
    """

    schema: Schema

    @property
    def features(self) -> FeatureSpec:
        """The :class:`~kraken.data.features.FeatureSpec` of this stream's raw values."""
        ...

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Yield batches of up to ``batch_size`` samples from record ``start`` on."""
        ...

    @property
    def skipped(self) -> int:
        """Malformed records skipped by the latest ``batches`` iteration (MovieLens: at load)."""
        ...


@runtime_checkable
class LogStream(Stream, Protocol):
    """A stream whose position is a state rather than a record count: a log's last entry
    id per partition, a joiner's pending impressions.

    The trainer checkpoints it at a quiet point of its input pipeline: it stops reading
    ahead, trains every batch already read, then takes ``position()``, which therefore
    describes exactly the batches trained. Resuming calls ``seek(state)`` before
    ``batches`` (whose ``start`` must then be 0). Once the checkpoint holding a state is
    committed, ``commit(state)`` lets the log forget what it covers (``XACK``); nothing is
    acknowledged before.

    While caught up a log stream yields *empty* batches (``len(batch) == 0``) after each
    blocking read that timed out, so the trainer keeps publishing, logging, checkpointing
    and hearing stop requests while idle. ``offset`` counts entries consumed (reporting).
    """

    def position(self) -> dict[str, np.ndarray]:
        """State after the last batch yielded (valid only while no read is in progress)."""
        ...

    def seek(self, state: dict[str, np.ndarray]) -> None:
        """Make the next ``batches`` iteration continue right after ``state``."""
        ...

    def commit(self, state: dict[str, np.ndarray]) -> None:
        """A checkpoint holding ``state`` is durable: acknowledge what it covers."""
        ...

    def scored(self, fresh: Batch, probability: np.ndarray) -> None:
        """The model's probabilities ``float32[len(fresh)]`` for ``batch.fresh``."""
        ...

    def lag(self) -> dict[str, float]:
        """Consumer lag now: ``{"entries": ..., "seconds": ...}`` (0 when caught up)."""
        ...
