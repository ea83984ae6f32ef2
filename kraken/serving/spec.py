"""``ModelSpec``: everything a server needs to rebuild the trainer's model, as JSON.

The trainer's dense model is rebuilt from its registry name, hyperparameters and shape
(then its weights are loaded from a sync), the :class:`~kraken.nn.layout.EmbeddingLayout`
from the same settings (table names, pooling, ...), and raw request values are featurized
with the stream's :class:`~kraken.data.features.FeatureSpec`. No pickle: the spec is plain
JSON carried in every full snapshot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kraken.data.features import FeatureSpec
from kraken.data.hashing import HASH_VERSION
from kraken.errors import ConfigError
from kraken.nn.embedding import EmbeddingLayer
from kraken.nn.layout import EmbeddingLayout
from kraken.nn.models import ModelShape, RankingModel, build_model
from kraken.ps.protocol import ParameterServer
from kraken.table import TableConfig

__all__ = ["ModelSpec"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model as a server rebuilds it.

    Attributes:
        model: registry name (``deepfm``, ...).
        model_kwargs: its hyperparameters (as passed to ``build_model``).
        shape: the :class:`ModelShape` it was built with.
        tables: the trainer's table configs (dims, precision, capacity, default value).
        embedding: the embedding layout's settings (:meth:`EmbeddingLayout.to_dict`).
        features: how raw request values become feature IDs.
    """

    model: str
    model_kwargs: dict[str, Any]
    shape: ModelShape
    tables: dict[str, TableConfig]
    embedding: dict[str, Any]
    features: FeatureSpec

    @classmethod
    def from_parts(cls, *, model_name: str, model_kwargs: dict[str, Any], model: RankingModel,
                   embedding: EmbeddingLayer | EmbeddingLayout, ps: ParameterServer,
                   features: FeatureSpec) -> ModelSpec:
        """The spec of a model built with ``build_model(model_name, model.shape, **kwargs)``."""
        layout = embedding.layout if isinstance(embedding, EmbeddingLayer) else embedding
        return cls(model=model_name, model_kwargs=dict(model_kwargs), shape=model.shape,
                   tables=dict(ps.tables), embedding=layout.to_dict(), features=features)

    @classmethod
    def from_run(cls, run: Any) -> ModelSpec:
        """The spec of a :class:`kraken.train.config.Run` (as built by ``build_run``)."""
        kw = {k: _tuples(v) for k, v in run.config.model.params.items()}
        return cls.from_parts(model_name=run.config.model.name, model_kwargs=kw,
                              model=run.model, embedding=run.embedding, ps=run.ps,
                              features=run.stream.features)

    def to_dict(self) -> dict[str, Any]:
        return {"hash_version": HASH_VERSION, "model": self.model,
                "model_kwargs": _jsonable(self.model_kwargs),
                "shape": _jsonable(dataclasses.asdict(self.shape)),
                "tables": {n: t.to_dict() for n, t in self.tables.items()},
                "embedding": _jsonable(self.embedding), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` naming what is wrong."""
        try:
            if d.get("hash_version") != HASH_VERSION:
                raise ConfigError(f"spec.hash_version: the model was trained with feature "
                                  f"hashing {d.get('hash_version')!r}, this build uses "
                                  f"{HASH_VERSION}")
            shape = d["shape"]
            return cls(model=str(d["model"]),
                       model_kwargs={k: _tuples(v) for k, v in d["model_kwargs"].items()},
                       shape=ModelShape(**{**shape,
                                           "sequence_fields": tuple(shape["sequence_fields"])}),
                       tables={n: TableConfig.from_dict(t, f"spec.tables.{n}")
                               for n, t in d["tables"].items()},
                       embedding=d["embedding"],
                       features=FeatureSpec.from_dict(d["features"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"spec: unusable model spec ({type(exc).__name__}: {exc})"
                              ) from None

    def __post_init__(self) -> None:
        self.build_layout()  # the embedding settings must fit the features and the tables

    def build_model(self) -> RankingModel:
        """A fresh model of this architecture (weights to be loaded), in eval mode."""
        m = build_model(self.model, self.shape, **self.model_kwargs)
        return m.eval()

    def build_layout(self) -> EmbeddingLayout:
        """The embedding layout of this model over the stream's schema.

        Raises :class:`ConfigError` when the settings do not fit the schema or the tables.
        """
        layout = EmbeddingLayout.from_dict(self.features.schema, self.embedding,
                                           "spec.embedding")
        layout.check_tables(self.tables)
        return layout
