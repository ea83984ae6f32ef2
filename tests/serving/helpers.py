"""A small trainer that publishes into a model directory, and reference scores for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kraken.data.featurize import featurize
from kraken.nn.embedding import EmbeddingLayer
from kraken.serving import ModelSpec, ModelVersion, Publisher
from kraken.train import Trainer
from tests.train.helpers import make_trainer


def spec_of(tr: Trainer) -> ModelSpec:
    kw = {"hidden": (32, 16)} if tr.model.name in ("deepfm", "wide_deep") else {}
    return ModelSpec.from_parts(model_name=tr.model.name, model_kwargs=kw, model=tr.model,
                                embedding=tr.embedding, ps=tr.ps,
                                features=tr.stream.features)


def publishing_trainer(model_dir: Path, *, sync_interval: float = 0.0,
                       dense_sync_interval: float = 0.0, snapshot_interval: float = 1e9,
                       on_publish: Callable[[ModelVersion], None] | None = None,
                       **trainer_kw: Any) -> tuple[Trainer, Publisher]:
    tr = make_trainer(None, **trainer_kw)
    pub = Publisher(tr.ps, tr.model, spec_of(tr), model_dir, sync_interval=sync_interval,
                    dense_sync_interval=dense_sync_interval,
                    snapshot_interval=snapshot_interval, on_publish=on_publish)
    tr.publisher = pub
    return tr, pub


def probe_records(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Records for the synthetic stream of ``make_trainer`` (5 fields, 3 dense)."""
    rng = np.random.default_rng(seed)
    return [{**{f"c{j}": int(rng.zipf(1.3) % 3000 + 300 * j % 50) for j in range(5)},
             **{f"d{j}": float(rng.standard_normal()) for j in range(3)}} for _ in range(n)]


def reference_scores(tr: Trainer, records: list[dict[str, Any]]) -> np.ndarray:
    """What the trainer's own model says for ``records`` now (eval mode, no admission)."""
    spec = spec_of(tr)
    batch = featurize(spec.features, records)
    was = tr.model.training
    tr.model.eval()
    tr.embedding.eval()
    try:
        with torch.no_grad():
            p = tr.embedding.prepare(batch)
            logits = tr.model(tr.embedding(tr.embedding.pull(p, train=False)))
            return torch.sigmoid(logits).numpy().astype(np.float32)
    finally:
        tr.model.train(was)
        tr.embedding.train(was)


def sharded_trainer(n_shards: int = 2, *, n_records: int = 6000, seed: int = 0,
                    **trainer_kw: Any) -> Trainer:
    """``make_trainer``'s model and stream with its tables on ``n_shards`` in-process
    shards (each a :class:`kraken.ps.shard.Shard`, reachable as ``tr.ps.endpoints``)."""
    from kraken.ps import ShardedPS  # noqa: PLC0415

    base = make_trainer(None, n_records=n_records, seed=seed, **trainer_kw)
    ps = ShardedPS.in_process(base.ps.tables, shards=n_shards, evict_every=3)
    layer = EmbeddingLayer(ps, base.stream.schema,
                           wide_table="wide" if base.model.needs_wide else None)
    return Trainer(model=base.model, embedding=layer, ps=ps, stream=base.stream,
                   config=base.config)
