"""A seeded synthetic click stream with concept drift: the embedded default source.

Each record has ``n_fields`` categorical fields and ``n_dense`` dense features.
Within a field, IDs are drawn Zipf(``zipf_a``) over a window of ``vocab`` ranks whose
start slides by ``drift_ids_per_1k`` IDs every thousand records, so new IDs keep
appearing and old ones die out. Labels come from a hidden ground-truth model::

    logit = bias + sum_f w*(id_f) + sum_{f<g} <v*(id_f), v*(id_g)> / sqrt(F) + dense . beta(t)

where ``w*`` and ``v*`` are pure functions of the ID (seeded hashes) and ``beta(t)``
rotates slowly with time, so the click model itself shifts. AUC therefore measures
something real, with a ceiling set by the ground truth (``oracle_auc``).

Records are generated in chunks of ``CHUNK`` keyed by ``(seed, chunk index)``, so
any offset can be resumed exactly and the same seed always gives the same stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from kraken.config import check_int, check_number
from kraken.data._assemble import check_batch_args
from kraken.data.base import Batch, Schema
from kraken.data.features import FeatureKind, FeatureSpec
from kraken.table.init import _uniform01_batch
from kraken.table.keys import field_keys

__all__ = ["SyntheticConfig", "SyntheticStream"]

CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Shape and dynamics of the synthetic stream (``n_records=None`` is endless)."""

    n_records: int | None = 1_000_000
    n_fields: int = 8
    n_dense: int = 4
    vocab: int = 100_000
    zipf_a: float = 1.2
    drift_ids_per_1k: int = 2
    factor_dim: int = 4
    seed: int = 0
    start_time: int = 1_700_000_000
    seconds_per_record: float = 0.01

    def __post_init__(self) -> None:
        if self.n_records is not None:
            check_int("n_records", self.n_records, lo=0)
        check_int("n_fields", self.n_fields, lo=1, hi=200)
        check_int("n_dense", self.n_dense, lo=0)
        check_int("vocab", self.vocab, lo=1)
        check_number("zipf_a", self.zipf_a, lo=1.0, lo_open=True)
        check_int("drift_ids_per_1k", self.drift_ids_per_1k, lo=0)
        check_int("factor_dim", self.factor_dim, lo=1)
        check_int("seed", self.seed, lo=0)


class SyntheticStream:
    """Deterministic, resumable synthetic stream (see the module docstring)."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        c = self.config
        self.schema = Schema(fields=tuple(f"c{i}" for i in range(c.n_fields)),
                             dense=tuple(f"d{i}" for i in range(c.n_dense)))

    @property
    def skipped(self) -> int:
        return 0

    @property
    def features(self) -> FeatureSpec:
        """Every field is an integer ID (``int``); dense values are used as they are."""
        return FeatureSpec.text(self.schema, FeatureKind.INT)

    def _chunk(self, index: int) -> Batch:
        c = self.config
        rng = np.random.default_rng([c.seed, index])
        n, f = CHUNK, c.n_fields
        start = index * CHUNK
        ranks = np.minimum(rng.zipf(c.zipf_a, size=(n, f)), c.vocab) - 1
        pos = start + np.arange(n)
        ids = ranks + (pos * c.drift_ids_per_1k // 1000)[:, None]
        keys = np.stack([field_keys(i, ids[:, i]) for i in range(f)], axis=1)
        dense = rng.standard_normal((n, c.n_dense)).astype(np.float32)
        logit = self.true_logit(keys, dense, pos)
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        event_time = (c.start_time + pos * c.seconds_per_record).astype(np.int64)
        return Batch(keys=keys, dense=dense, label=label, event_time=event_time,
                     offset=start + n)

    def true_logit(self, keys: np.ndarray, dense: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The hidden model's logit ``float64[B]`` for records at stream positions ``pos``.

        The best any model can do: the AUC of this logit is the stream's ceiling.
        """
        c = self.config
        n, f = keys.shape
        flat = keys.reshape(-1)
        w = (_uniform01_batch(flat, c.seed + 101) - 0.5).reshape(n, f) * 1.6
        v = np.stack([_uniform01_batch(flat, c.seed + 202 + k) - 0.5
                      for k in range(c.factor_dim)], axis=1).reshape(n, f, c.factor_dim) * 2.0
        s = v.sum(axis=1)
        pair = 0.5 * ((s * s).sum(axis=1) - (v * v).sum(axis=(1, 2))) / np.sqrt(f)
        angle = pos / 200_000.0
        beta = np.stack([np.cos(angle + k) for k in range(c.n_dense)], axis=1) * 0.5
        return -1.2 + w.sum(axis=1) + pair + (dense * beta).sum(axis=1)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``batch_size`` records from record ``start`` (the last may be short)."""
        check_batch_args(batch_size, start)
        return self._batches(batch_size, start)

    def _batches(self, batch_size: int, start: int) -> Iterator[Batch]:
        end = self.config.n_records
        pos = start
        cached: tuple[int, Batch] | None = None  # small batches reuse their chunk
        while end is None or pos < end:
            want = batch_size if end is None else min(batch_size, end - pos)
            parts, got = [], 0
            while got < want:
                idx, off = divmod(pos + got, CHUNK)
                if cached is None or cached[0] != idx:
                    cached = (idx, self._chunk(idx))
                chunk = cached[1]
                take = min(CHUNK - off, want - got)
                parts.append(chunk.slice(off, off + take))
                got += take
            pos += want
            yield Batch(keys=np.concatenate([p.keys for p in parts]),
                        dense=np.concatenate([p.dense for p in parts]),
                        label=np.concatenate([p.label for p in parts]),
                        event_time=np.concatenate([p.event_time for p in parts]), offset=pos)
