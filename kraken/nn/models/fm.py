"""Factorization machine (Rendle, 2010): ``logit = first_order + sum_{i<j} <e_i, e_j>``."""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import FirstOrder, fm_interaction

__all__ = ["FM"]


@register_model
class FM(RankingModel):
    """First-order terms plus all pairwise field interactions; the embeddings are the factors."""

    name = "fm"
    needs_wide = True

    def __init__(self, shape: ModelShape) -> None:
        super().__init__(shape)
        self.first_order = FirstOrder(shape.n_dense)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.first_order(inputs) + fm_interaction(inputs.emb)
