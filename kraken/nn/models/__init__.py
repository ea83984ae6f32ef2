"""The model zoo: importing this package registers every model in :data:`MODELS`.

Build one with ``build_model(name, shape, **hyperparameters)``; each model lives in its own
module, built from the shared parts in :mod:`kraken.nn.models.parts`.
"""

from __future__ import annotations

from kraken.nn.models import dcn, deepfm, din, dlrm, fm, lr, nfm, wide_deep  # noqa: F401
from kraken.nn.models.base import MODELS, ModelShape, RankingModel, build_model

__all__ = ["MODELS", "ModelShape", "RankingModel", "build_model"]
