"""DLRM (Naumov et al., 2019): dot-product interactions between a dense "bottom" vector
and the field embeddings.

    z     = bottom_MLP(dense)                       float32[B, D]   (absent when Dd == 0)
    T     = [z, e_1, ..., e_F]                      float32[B, n, D], n = F + 1 (or F)
    inter = (T T^T)[:, i, j] for i < j              float32[B, n (n - 1) / 2]
    logit = top_MLP([z, inter]) -> 1
"""

from __future__ import annotations

import torch

from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import MLP, check_dropout, check_layers

__all__ = ["DLRM"]


@register_model
class DLRM(RankingModel):
    """``bottom`` are the bottom MLP's widths and must end in ``shape.dim`` (default
    ``(64, shape.dim)``); every bottom layer has a ReLU, as in the reference code.
    ``top`` are the top MLP's hidden widths, followed by a final linear to one logit."""

    name = "dlrm"

    def __init__(self, shape: ModelShape, bottom: tuple[int, ...] | None = None,
                 top: tuple[int, ...] = (512, 256), dropout: float = 0.0) -> None:
        super().__init__(shape)
        bottom = check_layers("model.bottom", (64, shape.dim) if bottom is None else bottom)
        if not bottom or bottom[-1] != shape.dim:
            raise ConfigError(f"model.bottom: must end in the embedding dim {shape.dim}, "
                              f"got {bottom}")
        top = check_layers("model.top", top)
        dropout = check_dropout("model.dropout", dropout)
        self.bottom = MLP(shape.n_dense, bottom) if shape.n_dense > 0 else None
        n = shape.n_fields + (self.bottom is not None)
        if n < 2:
            raise ConfigError(f"model: dlrm needs at least 2 vectors to interact, got "
                              f"{shape.n_fields} field(s) and {shape.n_dense} dense features")
        i, j = torch.triu_indices(n, n, offset=1)
        self.register_buffer("_i", i, persistent=False)
        self.register_buffer("_j", j, persistent=False)
        top_in = len(i) + (shape.dim if self.bottom is not None else 0)
        self.top = MLP(top_in, top, 1, dropout)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        t = inputs.emb
        if self.bottom is not None:
            z = self.bottom(inputs.dense)
            t = torch.cat([z.unsqueeze(1), t], dim=1)
        inter = torch.bmm(t, t.transpose(1, 2))[:, self._i, self._j]
        x = torch.cat([z, inter], dim=1) if self.bottom is not None else inter
        return self.top(x).squeeze(-1)
