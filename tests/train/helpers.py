"""Small trainers over the synthetic stream for tests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.nn.embedding import EmbeddingLayer
from kraken.nn.models import ModelShape, build_model
from kraken.optim import RowWiseAdaGrad
from kraken.ps import LocalPS
from kraken.table import LRU, CountMin, TableConfig, TableRows, Zeros
from kraken.table.persistence import read_table_file
from kraken.train import Trainer, TrainerConfig


def make_trainer(run_dir: Path | None, *, n_records: int = 12_000, model: str = "deepfm",
                 seed: int = 0, model_kw: dict[str, Any] | None = None,
                 ps_kw: dict[str, Any] | None = None, **trainer_kw: Any) -> Trainer:
    stream = SyntheticStream(SyntheticConfig(n_records=n_records, n_fields=5, n_dense=3,
                                             vocab=3000, drift_ids_per_1k=50, seed=1))
    emb = TableConfig(dim=8, capacity=4000, optimizer=RowWiseAdaGrad(lr=0.1),
                      admission=CountMin(threshold=2, width=4096),
                      eviction=LRU(0.9, 0.7), seed=seed)
    tables = {"emb": emb, "wide": TableConfig(dim=1, capacity=4000, initializer=Zeros())}
    ps = LocalPS(tables, evict_every=3, **(ps_kw or {}))
    torch.manual_seed(seed)
    kw = {"hidden": (32, 16)} if model in ("deepfm", "wide_deep") else {}
    kw.update(model_kw or {})
    m = build_model(model, ModelShape(n_fields=5, dim=8, n_dense=3), **kw)
    layer = EmbeddingLayer(ps, stream.schema, wide_table="wide" if m.needs_wide else None)
    cfg = TrainerConfig(**{"batch_size": 512, "dense_lr": 0.01, "window": 2000,
                           "seed": seed, **trainer_kw})
    return Trainer(model=m, embedding=layer, ps=ps, stream=stream, config=cfg, run_dir=run_dir)


def model_state(tr: Trainer) -> dict[str, Any]:
    """Everything that defines the trained model, comparable with ==: dense weights, and
    every table's rows and optimizer state as the PS saves them (through the protocol)."""
    out: dict[str, Any] = {k: v.detach().numpy().tolist() for k, v in tr.model.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        layout = tr.ps.save(d)
        files = [Path(d) / s["dir"] for s in layout["shards"]]
        tables = {name: [read_table_file(f / f"{name}.ktab").rows for f in files]
                  for name in tr.ps.tables}
    for name, parts in tables.items():
        rows = TableRows(**{f: np.concatenate([getattr(p, f) for p in parts])
                            for f in ("keys", "weights", "state", "last_seen", "count",
                                      "stamp")})
        order = rows.keys.argsort()
        out[f"{name}.keys"] = rows.keys[order].tolist()
        out[f"{name}.weights"] = rows.weights[order].tolist()
        out[f"{name}.state"] = rows.state[order].tolist()
    return out
