"""The model contract and registry.

A model is built from a :class:`ModelShape` (what the data looks like) and its own
keyword hyperparameters, and maps :class:`~kraken.nn.inputs.ModelInputs` to one
logit per sample (``float32[B]``). ``needs_wide`` asks the embedding layer for a
dim-1 first-order table; ``sequence_fields`` names multi-valued fields the model
wants unpooled (with a mask) in ``ModelInputs.sequences``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from kraken.config import check_int
from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs

__all__ = ["MODELS", "ModelShape", "RankingModel", "build_model", "register_model"]


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """``n_fields`` (F, pooled multi-valued fields included), ``dim`` (D), ``n_dense`` (Dd);
    ``sequence_fields`` are the multi-valued fields available unpooled, and
    ``target_field`` the index in F of the candidate item (DIN's query)."""

    n_fields: int
    dim: int
    n_dense: int
    sequence_fields: tuple[str, ...] = ()
    target_field: int = 0

    def __post_init__(self) -> None:
        check_int("n_fields", self.n_fields, lo=1)
        check_int("dim", self.dim, lo=1)
        check_int("n_dense", self.n_dense, lo=0)
        check_int("target_field", self.target_field, lo=0, hi=self.n_fields - 1)


class RankingModel(nn.Module):
    """Base class: ``forward(inputs) -> logits float32[B]``."""

    name: ClassVar[str]
    needs_wide: ClassVar[bool] = False

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape

    @property
    def sequence_fields(self) -> tuple[str, ...]:
        """Multi-valued fields this model wants unpooled."""
        return ()

    def forward(self, inputs: ModelInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


MODELS: dict[str, type[RankingModel]] = {}


def register_model(cls: type[RankingModel]) -> type[RankingModel]:
    """Class decorator: make ``cls`` buildable by its ``name``; names are unique."""
    if MODELS.get(cls.name, cls) is not cls:
        raise ValueError(f"model name {cls.name!r} is already registered")
    MODELS[cls.name] = cls
    return cls


def build_model(name: str, shape: ModelShape, **kwargs: Any) -> RankingModel:
    """Build a registered model; unknown names or hyperparameters raise ConfigError."""
    cls = MODELS.get(name)
    if cls is None:
        raise ConfigError(f"model.name: unknown model {name!r}; allowed: {sorted(MODELS)}")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(kwargs) - set(params) - {"self", "shape"})
    if unknown:
        allowed = sorted(set(params) - {"self", "shape"})
        raise ConfigError(f"model: unknown hyperparameter(s) {unknown} for {name!r}; "
                          f"allowed: {allowed}")
    return cls(shape, **kwargs)
