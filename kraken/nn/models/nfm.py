"""NFM (He & Chua, 2017): ``logit = first_order + MLP([bi_interaction(emb), dense])``."""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import MLP, FirstOrder, bi_interaction, check_dropout, check_layers

__all__ = ["NFM"]


@register_model
class NFM(RankingModel):
    """An MLP over the bi-interaction pooling ``float32[B, D]`` (dense features appended)."""

    name = "nfm"
    needs_wide = True

    def __init__(self, shape: ModelShape, hidden: tuple[int, ...] = (64,),
                 dropout: float = 0.0) -> None:
        super().__init__(shape)
        hidden = check_layers("model.hidden", hidden)
        dropout = check_dropout("model.dropout", dropout)
        self.first_order = FirstOrder(shape.n_dense)
        self.deep = MLP(shape.dim + shape.n_dense, hidden, 1, dropout)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        x = torch.cat([bi_interaction(inputs.emb), inputs.dense], dim=1)
        return self.first_order(inputs) + self.deep(x).squeeze(-1)
