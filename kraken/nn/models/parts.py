"""Building blocks shared by the model zoo.

Shapes as in :mod:`kraken.nn.inputs`: ``B`` samples, ``F`` fields, ``D`` embedding dim,
``Dd`` dense features. Every function here is pure; the two modules (:class:`MLP`,
:class:`FirstOrder`) draw their initial weights from torch's global generator, so
``torch.manual_seed`` before construction makes a model reproducible.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kraken.config import check_int, check_number
from kraken.errors import ConfigError, InputError
from kraken.nn.inputs import ModelInputs

__all__ = ["MLP", "FirstOrder", "bi_interaction", "check_dropout", "check_layers", "flat",
           "fm_interaction"]


def check_layers(path: str, value: Any) -> tuple[int, ...]:
    """A tuple (or list) of layer widths, each an int >= 1; may be empty."""
    if not isinstance(value, (tuple, list)):
        raise ConfigError(f"{path}: expected a sequence of layer sizes, "
                          f"got {type(value).__name__} {value!r}")
    return tuple(check_int(f"{path}[{i}]", v, lo=1) for i, v in enumerate(value))


def check_dropout(path: str, value: Any) -> float:
    """A dropout probability in ``[0, 1)``."""
    return check_number(path, value, lo=0.0, hi=1.0, hi_open=True)


class MLP(nn.Sequential):
    """``Linear+ReLU`` for each width in ``hidden`` (dropout after each ReLU), then a plain
    ``Linear`` to ``out_dim`` if given. ``float32[..., in_dim] -> float32[..., out_features]``
    where ``out_features`` is ``out_dim``, else ``hidden[-1]``, else ``in_dim``."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None,
                 dropout: float = 0.0) -> None:
        check_int("in_dim", in_dim, lo=1)
        hidden = check_layers("hidden", hidden)
        dropout = check_dropout("dropout", dropout)
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, check_int("out_dim", out_dim, lo=1)))
            d = out_dim
        super().__init__(*layers)
        self.out_features = d


class FirstOrder(nn.Module):
    """The linear part of LR/FM/Wide&Deep: ``sum_f wide[:, f] + dense @ w + b -> float32[B]``.

    ``wide`` is the per-field weight pulled from the dim-1 table, so the only local parameters
    are the dense weights (absent when ``Dd == 0``) and the bias (initialised to 0).
    """

    def __init__(self, n_dense: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_dense, 1, bias=False) if n_dense > 0 else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        if inputs.wide is None:
            raise InputError("inputs.wide: this model needs the first-order (wide) weights, "
                             "got None")
        out = inputs.wide.sum(dim=1) + self.bias
        if self.dense is not None:
            out = out + self.dense(inputs.dense).squeeze(-1)
        return out


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """Sum of pairwise dot products ``sum_{i<j} <e_i, e_j>``: ``float32[B, F, D] -> [B]``."""
    return bi_interaction(emb).sum(dim=1)


def bi_interaction(emb: torch.Tensor) -> torch.Tensor:
    """NFM's bi-interaction pooling ``sum_{i<j} e_i * e_j``: ``float32[B, F, D] -> [B, D]``,
    in O(F·D) as ``0.5 * ((sum_f e)^2 - sum_f e^2)``."""
    s = emb.sum(dim=1)
    return 0.5 * (s * s - (emb * emb).sum(dim=1))


def flat(inputs: ModelInputs) -> torch.Tensor:
    """All embeddings flattened, then the dense features: ``float32[B, F*D + Dd]``."""
    return torch.cat([inputs.emb.flatten(start_dim=1), inputs.dense], dim=1)
