"""Wide & Deep (Cheng et al., 2016): ``logit = first_order + MLP(flat(emb, dense))``."""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import MLP, FirstOrder, check_dropout, check_layers, flat

__all__ = ["WideDeep"]


@register_model
class WideDeep(RankingModel):
    """The wide part is the first-order terms; the deep part an MLP over every input."""

    name = "wide_deep"
    needs_wide = True

    def __init__(self, shape: ModelShape, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.0) -> None:
        super().__init__(shape)
        hidden = check_layers("model.hidden", hidden)
        dropout = check_dropout("model.dropout", dropout)
        self.first_order = FirstOrder(shape.n_dense)
        self.deep = MLP(shape.n_fields * shape.dim + shape.n_dense, hidden, 1, dropout)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.first_order(inputs) + self.deep(flat(inputs)).squeeze(-1)
