"""``Replica``: a read-only copy of the trainer's model that answers predictions.

It holds weights only (a :class:`~kraken.serving.store.WeightStore`: no optimizer state,
no admission counters, optionally 16-bit or 8-bit row-wise quantized) and a dense model
rebuilt from the spec. An
ID it does not hold reads as the table's default vector, exactly as in training.

Updates apply as whole versions. A delta's rows are written under the replica's lock
(the new dense model, when the delta has one, is built before the lock is taken and
swapped in under it); a snapshot builds a complete new store and model off to the side
and swaps them in. A prediction looks up every row it needs and takes the dense model
under the same lock, so it is answered by exactly one version: rows of version ``v`` and
the dense weights of the newest dense sync at or before ``v``.

**Rows from shards.** When the trainer's versions say ``shards = N`` (the shards publish
the rows), the replica's state is a version vector: the trainer's (dense) version plus
one version per shard, each stream applied on its own. A shard's delta applies when its
``base`` equals the replica's entry for that shard (and comes from the same shard run);
otherwise it is a gap for that shard only, healed by that shard's snapshot, which
replaces exactly the rows that shard wrote (the store records each row's shard) and
leaves the other shards' rows alone. A trainer snapshot with the same spec keeps the
rows; one with another spec starts an empty store, so every shard must load a snapshot
again. The replica is ready once it holds a dense version and a version of every shard;
a prediction reports the whole vector (``version``, ``dense_version``,
``shard_versions``), read under the same lock as its rows.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kraken.config import Precision
from kraken.data.base import Batch
from kraken.data.featurize import featurize
from kraken.errors import CheckpointMismatchError, NotReadyError, VersionGapError
from kraken.nn.layout import EmbeddingLayout, Pulled
from kraken.nn.models import RankingModel
from kraken.serving.spec import ModelSpec
from kraken.serving.store import StoreTable, WeightFormat, WeightStore
from kraken.serving.version import ModelVersion
from kraken.table import TableConfig
from kraken.types import F32, Keys

__all__ = ["Prediction", "Replica", "ReplicaInfo", "ShardState"]

HISTORY = 256


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Click probabilities ``scores float32[B]`` and the versions that produced them
    (``shard_versions``: one per shard when the shards publish the rows, else empty)."""

    scores: np.ndarray
    version: int
    dense_version: int
    shard_versions: tuple[int, ...] = ()


@dataclasses.dataclass
class ShardState:
    """Where a replica stands on one shard's row stream (times are unix seconds)."""

    version: int = 0
    lineage: str = ""
    publish_time: float = 0.0
    applied_time: float = 0.0
    max_event_time: int = 0
    versions_applied: int = 0
    snapshots_loaded: int = 0
    history: deque[tuple[int, float, float]] = dataclasses.field(
        default_factory=lambda: deque(maxlen=HISTORY))
    """The last 256 ``(version, publish_time, applied_time)`` of this shard."""


@dataclasses.dataclass(frozen=True)
class ReplicaInfo:
    """Where a replica stands (times are unix seconds; lags are computed at ``now``)."""

    ready: bool
    version: int
    dense_version: int
    lineage: str
    model: str
    publish_time: float
    applied_time: float
    max_event_time: int
    versions_applied: int
    snapshots_loaded: int
    tables: dict[str, dict[str, Any]]
    memory_bytes: int
    history: list[tuple[int, float, float]]
    shards: list[ShardState] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Model:
    spec: ModelSpec
    spec_dict: dict[str, Any]
    store: WeightStore
    layout: EmbeddingLayout
    dense: RankingModel


class Replica:
    """Serves the newest applied version (see the module docstring).

    Args:
        precision: storage of the weights (a :class:`~kraken.serving.store.WeightFormat`
            or its name: ``fp32``, ``fp16``, ``bf16``, ``int8``); None or ``"auto"`` keeps
            each table's training precision. ``int8`` stores each row as 8-bit codes with
            an fp16 scale and bias (tables of dim <= 4 in fp16). Anything else raises
            :class:`~kraken.errors.ConfigError` naming ``precision``.
        clock: wall clock (unix seconds), injectable for tests.
    """

    def __init__(self, *, precision: WeightFormat | Precision | str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.precision = (None if precision is None or precision == "auto"
                          else WeightFormat.of(precision, "precision"))
        self.clock = clock
        self._lock = threading.Lock()
        self._m: _Model | None = None
        self.version = 0
        self.dense_version = 0
        self.lineage = ""
        self.publish_time = 0.0
        self.applied_time = 0.0
        self.max_event_time = 0
        self.versions_applied = 0
        self.snapshots_loaded = 0
        self._history: deque[tuple[int, float, float]] = deque(maxlen=HISTORY)
        self._shards: list[ShardState] = []

    @property
    def ready(self) -> bool:
        return self._m is not None and all(s.version > 0 for s in self._shards)

    @property
    def loaded(self) -> bool:
        """Whether a model (spec and dense weights) is loaded; rows may still be missing."""
        return self._m is not None

    @property
    def n_shards(self) -> int:
        """Shard streams that publish the rows (0: the trainer's versions carry them)."""
        return len(self._shards)

    @property
    def shard_versions(self) -> tuple[int, ...]:
        """The replica's version of each shard's rows (0: none loaded yet)."""
        return tuple(s.version for s in self._shards)

    @property
    def spec(self) -> ModelSpec:
        if self._m is None:
            raise NotReadyError("no model loaded yet")
        return self._m.spec

    # -- updates -------------------------------------------------------------------------

    def apply(self, v: ModelVersion) -> None:
        """Apply a snapshot (always) or the delta that follows the current version.

        Raises :class:`VersionGapError` for a delta whose ``base`` is not the current
        version, :class:`CheckpointMismatchError` for one that does not fit the model;
        either way the replica is unchanged. A shard's row version (``v.shard`` set) is
        applied to that shard's entry of the version vector (see the module docstring).
        """
        if v.shard is not None:
            self._apply_shard(v)
            return
        if v.is_snapshot:
            self._load_snapshot(v)
            return
        m = self._m
        if m is None or v.base != self.version or v.lineage != self.lineage:
            raise VersionGapError(f"delta {v.version} (run {v.lineage}) follows version "
                                  f"{v.base}, the replica is at "
                                  f"{self.version if m is not None else 'no version'} "
                                  f"(run {self.lineage or '-'})")
        if v.shards != len(self._shards):
            raise CheckpointMismatchError(f"delta {v.version}: rows from {v.shards} shards, "
                                          f"the replica follows {len(self._shards)}")
        self._check_tables(m, v)
        dense = self._build_dense(m.spec, v.dense) if v.dense is not None else None
        with self._lock:
            if v.base != self.version or self._m is not m:
                raise VersionGapError(f"delta {v.version}: the replica moved to "
                                      f"{self.version} meanwhile")
            for name, t in v.tables.items():
                m.store.delete(name, t.evicted)
                m.store.upsert(name, t.keys, t.weights)
            if dense is not None:
                m.dense = dense
            self._advance(v)

    def _load_snapshot(self, v: ModelVersion) -> None:
        if v.spec is None or v.dense is None:
            raise CheckpointMismatchError(f"snapshot {v.version} lacks the model spec or the "
                                          "dense weights")
        m = self._m
        if m is not None and m.spec_dict == v.spec:
            spec, layout = m.spec, m.layout
        else:
            spec = ModelSpec.from_dict(v.spec)
            layout = spec.build_layout()
        if v.shards == 0:
            missing = sorted(set(spec.tables) - set(v.tables))
            if missing:
                raise CheckpointMismatchError(f"snapshot {v.version} lacks table(s) {missing}")
        elif v.tables:
            raise CheckpointMismatchError(f"snapshot {v.version}: rows come from {v.shards} "
                                          "shards, yet it carries rows itself")
        keep = (v.shards > 0 and m is not None and m.spec_dict == v.spec
                and len(self._shards) == v.shards)
        if keep and m is not None:
            store = m.store
        else:
            store = WeightStore({n: self._store_table(c) for n, c in spec.tables.items()},
                                capacity=sum(c.capacity for c in spec.tables.values()),
                                owners=v.shards > 0)
        for name, t in v.tables.items():
            if name not in spec.tables:
                raise CheckpointMismatchError(f"snapshot {v.version}: unknown table {name!r}")
            store.upsert(name, t.keys, t.weights)
        dense = self._build_dense(spec, v.dense)
        new = _Model(spec=spec, spec_dict=v.spec, store=store, layout=layout, dense=dense)
        with self._lock:
            if keep and self._m is not m:
                raise VersionGapError(f"snapshot {v.version}: the replica moved meanwhile")
            self._m = new
            if not keep:
                self._shards = [ShardState() for _ in range(v.shards)]
            self.snapshots_loaded += 1
            self._advance(v)

    def _check_tables(self, m: _Model, v: ModelVersion) -> None:
        for name, t in v.tables.items():
            if name not in m.store.tables:
                raise CheckpointMismatchError(f"{v.kind} {v.version}: unknown table {name!r}")
            m.store.check(name, t.keys, t.weights)

    def _apply_shard(self, v: ModelVersion) -> None:
        m, i = self._m, int(v.shard or 0)
        if m is None or not self._shards:
            raise VersionGapError(f"shard {i} {v.kind} {v.version}: the replica has no model "
                                  "whose rows come from shards yet")
        if v.shards != len(self._shards):
            raise CheckpointMismatchError(f"shard {i} {v.kind} {v.version}: a layout of "
                                          f"{v.shards} shards, the model has "
                                          f"{len(self._shards)}")
        st = self._shards[i]
        if not v.is_snapshot and (v.base != st.version or v.lineage != st.lineage):
            raise VersionGapError(f"shard {i} delta {v.version} (run {v.lineage}) follows "
                                  f"{v.base}, the replica is at {st.version} "
                                  f"(run {st.lineage or '-'})")
        if v.is_snapshot:
            missing = sorted(set(m.store.tables) - set(v.tables))
            if missing:
                raise CheckpointMismatchError(f"shard {i} snapshot {v.version} lacks "
                                              f"table(s) {missing}")
        self._check_tables(m, v)
        with self._lock:
            if self._m is not m or self._shards[i] is not st or (
                    not v.is_snapshot and v.base != st.version):
                raise VersionGapError(f"shard {i} {v.kind} {v.version}: the replica moved "
                                      "meanwhile")
            for name, t in v.tables.items():
                gone = m.store.owned(name, i) if v.is_snapshot else t.evicted
                m.store.delete(name, gone)
                m.store.upsert(name, t.keys, t.weights, owner=i)
            now = self.clock()
            st.version, st.lineage = v.version, v.lineage
            st.publish_time, st.applied_time = v.publish_time, now
            st.max_event_time = (v.max_event_time if v.is_snapshot
                                 else max(st.max_event_time, v.max_event_time))
            st.versions_applied += 1
            st.snapshots_loaded += int(v.is_snapshot)
            st.history.append((v.version, v.publish_time, now))

    def _store_table(self, c: TableConfig) -> StoreTable:
        return StoreTable(dim=c.dim, precision=self.precision or c.precision,
                          default=c.default_value)

    @staticmethod
    def _build_dense(spec: ModelSpec, arrays: dict[str, np.ndarray]) -> RankingModel:
        model = spec.build_model()
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in arrays.items()})
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointMismatchError(f"dense weights do not fit model {spec.model!r}: "
                                          f"{exc}") from exc
        return model.eval()

    def _advance(self, v: ModelVersion) -> None:
        """Record ``v`` as applied (called under the lock)."""
        now = self.clock()
        self.version, self.dense_version = v.version, v.dense_version
        self.lineage, self.publish_time, self.applied_time = v.lineage, v.publish_time, now
        self.max_event_time = max(self.max_event_time, v.max_event_time) \
            if not v.is_snapshot else v.max_event_time
        self.versions_applied += 1
        self._history.append((v.version, v.publish_time, now))

    # -- queries -------------------------------------------------------------------------

    def lookup(self, table: str, keys: Keys) -> F32:
        """Rows of ``keys`` in ``table`` at the current version (default where absent)."""
        with self._lock:
            if self._m is None:
                raise NotReadyError("no model loaded yet")
            return self._m.store.lookup(table, keys)

    def keys(self, table: str) -> Keys:
        """``int64[N]`` keys held in ``table`` at the current version, in no set order."""
        with self._lock:
            if self._m is None:
                raise NotReadyError("no model loaded yet")
            return self._m.store.keys(table)

    def predict(self, batch: Batch) -> Prediction:
        """Scores of ``batch`` (labels ignored), all from one version."""
        return self._predict(lambda _spec: batch)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> Prediction:
        """Scores of raw feature records, featurized exactly as in training
        (:func:`kraken.data.featurize.featurize`; raises ``InputError`` for bad records)."""
        return self._predict(lambda spec: featurize(spec.features, records))

    def _predict(self, make_batch: Callable[[ModelSpec], Batch]) -> Prediction:
        for _ in range(3):
            m = self._m
            if m is None:
                raise NotReadyError("no model loaded yet: waiting for the first snapshot")
            if not self.ready:
                raise NotReadyError("waiting for a snapshot of every shard's rows")
            prepared = m.layout.prepare(make_batch(m.spec))
            with self._lock:
                cur = self._m
                if cur is None:  # a model is never unloaded; kept for the type checker
                    raise NotReadyError("no model loaded yet")
                if cur is not m and cur.spec_dict != m.spec_dict:
                    continue  # a snapshot of another model arrived meanwhile: featurize again
                rows = {n: cur.store.lookup(n, prepared.keys) for n in cur.layout.tables}
                dense, layout = cur.dense, cur.layout
                version, dense_version = self.version, self.dense_version
                shard_versions = self.shard_versions
            with torch.inference_mode():
                inputs, _ = layout.inputs(Pulled(prepared=prepared, rows=rows))
                logits = dense(inputs)
                scores = torch.sigmoid(logits).numpy().astype(np.float32, copy=False)
            return Prediction(scores=scores, version=version, dense_version=dense_version,
                              shard_versions=shard_versions)
        raise NotReadyError("the model kept changing while this request was prepared")

    def info(self) -> ReplicaInfo:
        with self._lock:
            m = self._m
            tables = {} if m is None else {
                n: {"rows": m.store.rows(n), "dim": t.dim, "precision": t.format.value}
                for n, t in m.store.tables.items()}
            return ReplicaInfo(
                ready=self.ready, version=self.version, dense_version=self.dense_version,
                lineage=self.lineage, model="" if m is None else m.spec.model,
                publish_time=self.publish_time, applied_time=self.applied_time,
                max_event_time=self.max_event_time, versions_applied=self.versions_applied,
                snapshots_loaded=self.snapshots_loaded, tables=tables,
                memory_bytes=0 if m is None else m.store.memory_bytes,
                history=list(self._history),
                shards=[dataclasses.replace(s, history=deque(s.history))
                        for s in self._shards])
