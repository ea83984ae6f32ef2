"""PyTorch side: the embedding layout, its binding to a parameter server, the model zoo."""

from kraken.nn.embedding import EmbeddingLayer
from kraken.nn.inputs import ModelInputs
from kraken.nn.layout import EmbeddingLayout, Prepared, Pulled
from kraken.nn.models import MODELS, ModelShape, RankingModel, build_model

__all__ = ["MODELS", "EmbeddingLayer", "EmbeddingLayout", "ModelInputs", "ModelShape",
           "Prepared", "Pulled", "RankingModel", "build_model"]
