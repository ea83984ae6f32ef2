"""A whole run from one TOML file: data, tables, model, trainer.

Example (``examples/synthetic.toml``)::

    [data]
    source = "synthetic"          # synthetic | criteo | avazu | movielens-1m | movielens-100k | csv
    n_records = 500000            # further keys go to the source

    [model]
    name = "deepfm"               # lr | fm | wide_deep | deepfm | dcn_v2 | dlrm | nfm | din
    hidden = [256, 128]

    [tables.emb]                  # all sparse fields share this table
    dim = 16
    capacity = 2000000
    optimizer = { type = "rowwise_adagrad", lr = 0.05 }
    admission = { type = "count_min", threshold = 2 }
    eviction = [{ type = "lru", high_watermark = 0.95, low_watermark = 0.85 }]

    [trainer]
    batch_size = 4096
    dense_lr = 0.001

Every error names the key's path (``tables.emb.optimizer.lr: must be > 0, got -1``)
and, for choices, the allowed values; nothing runs before the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from kraken.config import build_dataclass
from kraken.data import open_stream
from kraken.data.base import Stream
from kraken.errors import ConfigError
from kraken.nn.embedding import EmbeddingLayer
from kraken.nn.models import MODELS, ModelShape, RankingModel, build_model
from kraken.ps import LocalPS
from kraken.table import TableConfig, Zeros
from kraken.train.randomness import seeded_scope
from kraken.train.trainer import TrainerConfig

__all__ = ["Run", "RunConfig", "build_run", "load_config"]

_SECTIONS = {"data", "model", "tables", "trainer", "embedding"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A validated run description (see the module docstring)."""

    data: dict[str, Any]
    model: dict[str, Any]
    tables: dict[str, TableConfig]
    trainer: TrainerConfig
    embedding: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunConfig:
        extra = sorted(set(doc) - _SECTIONS)
        if extra:
            raise ConfigError(f"unknown section(s) {extra}; allowed: {sorted(_SECTIONS)}")
        data = dict(doc.get("data", {"source": "synthetic"}))
        if "source" not in data:
            raise ConfigError("data.source: required")
        model = dict(doc.get("model", {"name": "deepfm"}))
        if model.get("name") not in MODELS:
            raise ConfigError(f"model.name: expected one of {sorted(MODELS)}, "
                              f"got {model.get('name')!r}")
        raw_tables = doc.get("tables", {"emb": {"dim": 16}})
        if not isinstance(raw_tables, dict) or "emb" not in raw_tables:
            raise ConfigError("tables.emb: required (the table of every sparse field)")
        tables = {n: TableConfig.from_dict(t, f"tables.{n}") for n, t in raw_tables.items()}
        if MODELS[model["name"]].needs_wide and "wide" not in tables:
            emb = tables["emb"]
            tables["wide"] = dataclasses.replace(emb, dim=1, initializer=Zeros(),
                                                 precision=emb.precision)
        trainer = build_dataclass(TrainerConfig, doc.get("trainer", {}), "trainer")
        embedding = dict(doc.get("embedding", {}))
        allowed = {"pooling", "max_sequence", "hash_buckets"}
        bad = sorted(set(embedding) - allowed)
        if bad:
            raise ConfigError(f"embedding: unknown key(s) {bad}; allowed: {sorted(allowed)}")
        return cls(data=data, model=model, tables=tables, trainer=trainer, embedding=embedding)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Parse and validate a TOML run file; ``overrides`` are merged per section first."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        doc.setdefault(section, {}).update(values)
    try:
        return RunConfig.from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


@dataclasses.dataclass
class Run:
    """Everything a trainer needs, built from a :class:`RunConfig`."""

    config: RunConfig
    stream: Stream
    ps: LocalPS
    embedding: EmbeddingLayer
    model: RankingModel


def build_run(config: RunConfig) -> Run:
    """Open the stream, create the tables, build the model (seeded by ``trainer.seed``)."""
    data = dict(config.data)
    stream = open_stream(data.pop("source"), **data)
    schema = stream.schema
    ps = LocalPS(config.tables)
    kw = {k: v for k, v in config.model.items() if k != "name"}
    target = kw.pop("target", None)
    names = schema.fields + schema.jagged
    if target is not None and target not in names:
        raise ConfigError(f"model.target: {target!r} is not a field; fields: {list(names)}")
    shape = ModelShape(n_fields=len(names), dim=config.tables["emb"].dim,
                       n_dense=len(schema.dense), sequence_fields=schema.jagged,
                       target_field=names.index(target) if target else 0)
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(v)
    with seeded_scope(config.trainer.seed):
        model = build_model(config.model["name"], shape, **kw)
    embedding = EmbeddingLayer(ps, schema, table="emb",
                               wide_table="wide" if model.needs_wide else None,
                               sequence_fields=model.sequence_fields, **config.embedding)
    return Run(config=config, stream=stream, ps=ps, embedding=embedding, model=model)
