"""DIN (Zhou et al., 2018): attention of the candidate item over a behaviour sequence.

    h, mask = inputs.sequences[sequence]            float32[B, L, D], bool[B, L]
    q       = emb[:, shape.target_field]            float32[B, D]
    w_l     = att_MLP([h_l, q, h_l - q, h_l * q])   one scalar per position, 0 where masked
    interest = sum_l w_l h_l                        float32[B, D]
    logit   = MLP([flat(emb, dense), interest]) -> 1

The weights are not normalised (no softmax), as in the paper. Padded positions are zeroed
before the attention unit, so their values (even non-finite ones) never reach the output.
"""

from __future__ import annotations

import torch

from kraken.errors import ConfigError
from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import ModelShape, RankingModel, register_model
from kraken.nn.models.parts import MLP, check_dropout, check_layers, flat

__all__ = ["DIN"]


@register_model
class DIN(RankingModel):
    """``sequence`` names the behaviour field, one of ``shape.sequence_fields``."""

    name = "din"

    def __init__(self, shape: ModelShape, sequence: str, att_hidden: tuple[int, ...] = (36,),
                 hidden: tuple[int, ...] = (200, 80), dropout: float = 0.0) -> None:
        super().__init__(shape)
        if sequence not in shape.sequence_fields:
            raise ConfigError(f"model.sequence: unknown sequence field {sequence!r}; "
                              f"allowed: {list(shape.sequence_fields)}")
        if not 0 <= shape.target_field < shape.n_fields:
            raise ConfigError(f"shape.target_field: must be in [0, {shape.n_fields}), "
                              f"got {shape.target_field}")
        att_hidden = check_layers("model.att_hidden", att_hidden)
        hidden = check_layers("model.hidden", hidden)
        dropout = check_dropout("model.dropout", dropout)
        self.sequence = sequence
        self.attention = MLP(4 * shape.dim, att_hidden, 1)
        self.deep = MLP(shape.n_fields * shape.dim + shape.n_dense + shape.dim, hidden, 1,
                        dropout)

    @property
    def sequence_fields(self) -> tuple[str, ...]:
        return (self.sequence,)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        h, mask = inputs.sequences[self.sequence]
        m = mask.unsqueeze(-1)
        h = torch.where(m, h, 0.0)
        q = inputs.emb[:, self.shape.target_field].unsqueeze(1).expand_as(h)
        w = self.attention(torch.cat([h, q, h - q, h * q], dim=-1))
        interest = (torch.where(m, w, 0.0) * h).sum(dim=1)
        return self.deep(torch.cat([flat(inputs), interest], dim=1)).squeeze(-1)
