"""DCN-v2 (Wang et al., 2021), stacked: cross layers on ``x0 = flat(emb, dense)``, then an MLP.

Each full-rank cross layer ``l`` computes ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``
(elementwise product, ``W_l`` of shape ``[d, d]`` with ``d = F*D + Dd``).
"""

from __future__ import annotations

import torch
from torch import nn

from kraken.config import check_int
from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import MLP, check_dropout, check_layers, flat

__all__ = ["DCNv2", "Cross"]


class Cross(nn.Module):
    """One full-rank cross layer: ``(x0, x) -> x0 * (W x + b) + x``, all ``float32[B, d]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


@register_model
class DCNv2(RankingModel):
    """``n_cross`` cross layers, then ``MLP(hidden)`` and a final linear to one logit."""

    name = "dcn_v2"

    def __init__(self, shape: ModelShape, n_cross: int = 2, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.0) -> None:
        super().__init__(shape)
        n_cross = check_int("model.n_cross", n_cross, lo=1)
        hidden = check_layers("model.hidden", hidden)
        dropout = check_dropout("model.dropout", dropout)
        d = shape.n_fields * shape.dim + shape.n_dense
        self.cross = nn.ModuleList(Cross(d) for _ in range(n_cross))
        self.deep = MLP(d, hidden, 1, dropout)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        x0 = x = flat(inputs)
        for layer in self.cross:
            x = layer(x0, x)
        return self.deep(x).squeeze(-1)
