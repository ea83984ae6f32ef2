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

from kraken.config import check_int, register
from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs

__all__ = ["MODELS", "ModelShape", "RankingModel", "build_model", "check_hyperparameters",
           "model_class", "register_model"]


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
    """Class decorator: make ``cls`` buildable by its ``name``.

    Names are unique: another class under a taken name raises :class:`ConfigError`
    (as every registry does, see :func:`kraken.config.register`).
    """
    return register(MODELS, cls.name, cls, "model")  # type: ignore[no-any-return]


def model_class(name: Any) -> type[RankingModel]:
    """The registered class of ``name``; else ``ConfigError`` (``name: unknown model ...``)."""
    cls = MODELS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"name: unknown model {name!r}; models are {sorted(MODELS)}")
    return cls


def check_hyperparameters(name: str, kwargs: Any) -> None:
    """Raise ``ConfigError`` unless ``name`` is a model and it accepts every key of ``kwargs``.

    Messages are relative to a run config's ``model`` section: ``name: unknown model
    'x'; models are [...]``, ``hiden: unknown hyperparameter(s) ['hiden'] for 'deepfm';
    allowed: [...]``.
    """
    params = inspect.signature(model_class(name).__init__).parameters
    allowed = sorted(set(params) - {"self", "shape"})
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown hyperparameter(s) {unknown} for {name!r}; "
                          f"allowed: {allowed}")


def build_model(name: str, shape: ModelShape, **kwargs: Any) -> RankingModel:
    """Build a registered model; every error is a :class:`ConfigError` under ``model.``.

    Unknown names (``model.name: unknown model 'x'; models are [...]``), unknown
    hyperparameters and invalid values (``model.hidden[0]: must be >= 1, got 0``).
    """
    try:
        check_hyperparameters(name, kwargs)
    except ConfigError as exc:
        raise ConfigError(f"model.{exc}") from None
    return MODELS[name](shape, **kwargs)
