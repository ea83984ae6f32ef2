"""Logistic regression: ``logit = sum_f wide[:, f] + dense @ w + b``."""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import FirstOrder

__all__ = ["LR"]


@register_model
class LR(RankingModel):
    """First-order terms only; the per-field weights come from the wide table."""

    name = "lr"
    needs_wide = True

    def __init__(self, shape: ModelShape) -> None:
        super().__init__(shape)
        self.first_order = FirstOrder(shape.n_dense)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.first_order(inputs)
