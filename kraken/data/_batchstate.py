"""Batches joined end to end, and a batch as named arrays for a checkpoint (no pickle).

``batch_state("ready", b)`` gives ``ready.keys``, ``ready.dense``, ``ready.label``,
``ready.event_time``, ``ready.prior`` (NaN where unknown) and, per multi-valued field
``g``, ``ready.jagged.g.values`` / ``ready.jagged.g.offsets``; ``batch_from_state``
reads them back exactly.
"""

from __future__ import annotations

import numpy as np

from kraken.data._columns import take_jagged
from kraken.data.base import Batch, Jagged, Schema

__all__ = ["batch_from_state", "batch_state", "concat_batches", "empty_batch", "take_rows"]


def empty_batch(schema: Schema) -> Batch:
    """A batch of 0 samples with ``schema``'s columns."""
    z = np.zeros(0, dtype=np.int64)
    return Batch(keys=np.zeros((0, len(schema.fields)), np.int64),
                 dense=np.zeros((0, len(schema.dense)), np.float32),
                 label=np.zeros(0, np.float32), event_time=z,
                 jagged={g: Jagged(z, np.zeros(1, np.int64)) for g in schema.jagged})


def _prior(b: Batch) -> np.ndarray:
    return b.prior if b.prior is not None else np.full(len(b), np.nan, np.float32)


def concat_batches(batches: list[Batch], schema: Schema) -> Batch:
    """``batches`` end to end (``prior`` NaN where a part had none; ``offset`` the last's)."""
    if not batches:
        return empty_batch(schema)
    if len(batches) == 1:
        return batches[0]
    jagged = {}
    for g in schema.jagged:
        parts = [b.jagged[g] for b in batches]
        base = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)]
                                 + [p.offsets[1:] + o for p, o in zip(parts, base, strict=True)])
        jagged[g] = Jagged(np.concatenate([p.values for p in parts]), offsets)
    with_prior = any(b.prior is not None for b in batches)
    return Batch(keys=np.concatenate([b.keys for b in batches]),
                 dense=np.concatenate([b.dense for b in batches]),
                 label=np.concatenate([b.label for b in batches]),
                 event_time=np.concatenate([b.event_time for b in batches]),
                 jagged=jagged, offset=batches[-1].offset,
                 prior=np.concatenate([_prior(b) for b in batches]) if with_prior else None)


def batch_state(prefix: str, batch: Batch) -> dict[str, np.ndarray]:
    """``batch`` as named arrays (see the module docstring)."""
    out = {f"{prefix}.keys": batch.keys, f"{prefix}.dense": batch.dense,
           f"{prefix}.label": batch.label, f"{prefix}.event_time": batch.event_time,
           f"{prefix}.prior": _prior(batch)}
    for g, jag in batch.jagged.items():
        out[f"{prefix}.jagged.{g}.values"] = jag.values
        out[f"{prefix}.jagged.{g}.offsets"] = jag.offsets
    return out


def batch_from_state(prefix: str, state: dict[str, np.ndarray], schema: Schema) -> Batch:
    """Inverse of :func:`batch_state`; ``prior`` is None when every value is NaN."""
    prior = np.asarray(state[f"{prefix}.prior"], dtype=np.float32)
    return Batch(keys=np.asarray(state[f"{prefix}.keys"], np.int64),
                 dense=np.asarray(state[f"{prefix}.dense"], np.float32),
                 label=np.asarray(state[f"{prefix}.label"], np.float32),
                 event_time=np.asarray(state[f"{prefix}.event_time"], np.int64),
                 jagged={g: Jagged(np.asarray(state[f"{prefix}.jagged.{g}.values"], np.int64),
                                   np.asarray(state[f"{prefix}.jagged.{g}.offsets"], np.int64))
                         for g in schema.jagged},
                 prior=None if np.isnan(prior).all() else prior)


def take_rows(b: Batch, idx: np.ndarray) -> Batch:
    """Rows ``idx int64[K]`` of ``b`` (``b`` itself when ``idx`` is ``0..len(b)-1``)."""
    if idx.shape[0] == len(b) and (idx == np.arange(len(b))).all():
        return b
    prior = b.prior[idx] if b.prior is not None else None
    return Batch(keys=b.keys[idx], dense=b.dense[idx], label=b.label[idx],
                 event_time=b.event_time[idx],
                 jagged={k: take_jagged(v, idx) for k, v in b.jagged.items()},
                 offset=b.offset, prior=prior)
