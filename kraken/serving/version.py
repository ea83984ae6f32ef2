"""``ModelVersion``: one published model update, a delta or a full snapshot.

Versions are numbered by the publisher, 1, 2, 3, ... A **delta** ``v`` (``base = v - 1``)
holds, per table, the rows changed since ``v - 1`` and the keys evicted since then, and
optionally the dense weights; a **snapshot** ``v`` (``base = None``) holds every live row,
the dense weights and the model spec. A replica at version ``v - 1`` applies delta ``v``;
any other replica must load a snapshot first. Per table::

    keys     int64[K]        rows to upsert (distinct)
    weights  float32[K, D]   their current values
    evicted  int64[E]        keys to delete (applied before the upserts)

Every version carries ``publish_time`` (the trainer's wall clock, unix seconds) and
``max_event_time`` (the newest event time trained into it) so freshness is measured.

**Rows from shards.** When parameter-server shards publish their own rows, two kinds of
stream share a model directory: the trainer's versions carry no rows (``tables`` empty)
and ``shards = N``, the number of shard streams that carry them; shard ``i``'s versions
carry only rows (no dense weights, no spec), ``shard = i`` and ``shards = N``, and are
numbered per shard (``base`` is the previous version of the same shard). A trainer
version with ``shards = 0`` (the default) carries its rows itself.

On disk and on a wire a version is one :mod:`kraken.arrayfile` container (checksummed, no
pickle): arrays ``t/<table>/keys|weights|evicted`` and ``dense/<parameter>``, the rest in
the JSON header.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from kraken.arrayfile import decode_arrays, encode_arrays, read_arrays, write_arrays
from kraken.errors import CorruptCheckpointError
from kraken.types import F32, Keys

__all__ = ["FILE_KIND", "ModelVersion", "TableUpdate"]

FILE_KIND = "kraken.model_version"


@dataclasses.dataclass(frozen=True)
class TableUpdate:
    """One table's part of a version (see the module docstring)."""

    keys: Keys
    weights: F32
    evicted: Keys

    def __len__(self) -> int:
        return int(self.keys.shape[0] + self.evicted.shape[0])


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """A published update (see the module docstring).

    ``dense`` maps parameter names to arrays (``None`` in a delta without dense weights);
    ``dense_version`` is the version whose dense weights a replica holds after applying
    this one; ``spec`` is the model spec (``ModelSpec.to_dict()``), set in snapshots;
    ``lineage`` names the publisher run that wrote it. ``shard`` is the index of the
    parameter-server shard that published this row-only version (None: the trainer);
    ``shards`` the number of shard streams that publish the rows (0: this stream does).
    """

    version: int
    base: int | None
    publish_time: float
    max_event_time: int
    lineage: str
    tables: dict[str, TableUpdate]
    dense: dict[str, np.ndarray] | None = None
    dense_version: int = 0
    spec: dict[str, Any] | None = None
    shard: int | None = None
    shards: int = 0

    @property
    def is_snapshot(self) -> bool:
        return self.base is None

    @property
    def kind(self) -> str:
        return "snapshot" if self.is_snapshot else "delta"

    @property
    def n_rows(self) -> int:
        return sum(int(t.keys.shape[0]) for t in self.tables.values())

    def filename(self) -> str:
        return f"{self.kind}-{self.version:012d}.kdat"

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"kind": FILE_KIND, "version": self.version, "base": self.base,
                "publish_time": self.publish_time, "max_event_time": self.max_event_time,
                "lineage": self.lineage, "dense_version": self.dense_version,
                "tables": sorted(self.tables), "has_dense": self.dense is not None,
                "spec": self.spec, "shard": self.shard, "shards": self.shards}
        arrays: dict[str, np.ndarray] = {}
        for name, t in self.tables.items():
            arrays[f"t/{name}/keys"] = t.keys
            arrays[f"t/{name}/weights"] = t.weights
            arrays[f"t/{name}/evicted"] = t.evicted
        for name, arr in (self.dense or {}).items():
            arrays[f"dense/{name}"] = arr
        return meta, arrays

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomically write this version to ``path``."""
        meta, arrays = self.to_arrays()
        write_arrays(path, meta, arrays)

    def to_bytes(self) -> bytes:
        """The same container as :meth:`write`, as bytes (for a push over the wire)."""
        meta, arrays = self.to_arrays()
        return encode_arrays(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "pushed version") -> ModelVersion:
        """Inverse of :meth:`to_bytes`; raises :class:`CorruptCheckpointError`."""
        meta, arrays = decode_arrays(data, where)
        return cls.from_arrays(meta, arrays, where)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModelVersion:
        """Read and validate a version file; raises :class:`CorruptCheckpointError`."""
        meta, arrays = read_arrays(path)
        return cls.from_arrays(meta, arrays, str(path))

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                    where: str = "version") -> ModelVersion:
        """Inverse of :meth:`to_arrays`, checking every shape and dtype."""
        if meta.get("kind") != FILE_KIND:
            raise CorruptCheckpointError(f"{where}: not a model version (kind "
                                         f"{meta.get('kind')!r})")
        try:
            tables = {}
            for name in meta["tables"]:
                keys, w, ev = (arrays[f"t/{name}/{x}"] for x in ("keys", "weights", "evicted"))
                if (keys.dtype != np.int64 or keys.ndim != 1 or ev.dtype != np.int64
                        or ev.ndim != 1 or w.dtype != np.float32 or w.ndim != 2
                        or w.shape[0] != keys.shape[0]):
                    raise CorruptCheckpointError(
                        f"{where}: table {name!r}: expected keys int64[K], weights "
                        f"float32[K, D], evicted int64[E]; got {keys.dtype}{list(keys.shape)}, "
                        f"{w.dtype}{list(w.shape)}, {ev.dtype}{list(ev.shape)}")
                if not np.isfinite(w).all():
                    raise CorruptCheckpointError(f"{where}: table {name!r}: non-finite weights")
                tables[name] = TableUpdate(keys=keys, weights=w, evicted=ev)
            dense = ({k[len("dense/"):]: v for k, v in arrays.items() if k.startswith("dense/")}
                     if meta["has_dense"] else None)
            base = meta["base"]
            shard, shards = meta.get("shard"), int(meta.get("shards", 0))
            if shards < 0 or (shard is not None and not 0 <= int(shard) < shards):
                raise CorruptCheckpointError(f"{where}: shard {shard!r} of {shards}")
            return cls(version=int(meta["version"]), base=None if base is None else int(base),
                       publish_time=float(meta["publish_time"]),
                       max_event_time=int(meta["max_event_time"]), lineage=str(meta["lineage"]),
                       tables=tables, dense=dense, dense_version=int(meta["dense_version"]),
                       spec=meta.get("spec"), shard=None if shard is None else int(shard),
                       shards=shards)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{where}: unreadable model version: "
                                         f"{type(exc).__name__}: {exc}") from exc
