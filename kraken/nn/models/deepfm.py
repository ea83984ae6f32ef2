"""DeepFM (Guo et al., 2017): ``logit = first_order + FM interaction + MLP(flat(emb, dense))``.

The FM and deep parts share the embeddings, as in the paper.
"""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import (
    MLP,
    FirstOrder,
    check_dropout,
    check_layers,
    flat,
    fm_interaction,
)

__all__ = ["DeepFM"]


@register_model
class DeepFM(RankingModel):
    """An FM and an MLP side by side over the same embeddings."""

    name = "deepfm"
    needs_wide = True

    def __init__(self, shape: ModelShape, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.0) -> None:
        super().__init__(shape)
        hidden = check_layers("model.hidden", hidden)
        dropout = check_dropout("model.dropout", dropout)
        self.first_order = FirstOrder(shape.n_dense)
        self.deep = MLP(shape.n_fields * shape.dim + shape.n_dense, hidden, 1, dropout)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        deep = self.deep(flat(inputs)).squeeze(-1)
        return self.first_order(inputs) + fm_interaction(inputs.emb) + deep
