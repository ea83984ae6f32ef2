"""PyTorch side: the embedding layer over a parameter server and the model zoo."""

from kraken.nn.embedding import EmbeddingLayer, Prepared, Pulled
from kraken.nn.inputs import ModelInputs
from kraken.nn.models import MODELS, ModelShape, RankingModel, build_model

__all__ = ["MODELS", "EmbeddingLayer", "ModelInputs", "ModelShape", "Prepared", "Pulled",
           "RankingModel", "build_model"]
