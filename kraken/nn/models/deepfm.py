"""DeepFM (Guo et al., 2017): ``logit = first_order + FM interaction + MLP(flat(emb, dense))``.

The FM and deep parts share the embeddings, as in the paper: it is Wide & Deep plus the
FM's second-order term.
"""

from __future__ import annotations

import torch

from kraken.nn.inputs import ModelInputs
from kraken.nn.models.base import register_model
from kraken.nn.models.parts import fm_interaction
from kraken.nn.models.wide_deep import WideDeep

__all__ = ["DeepFM"]


@register_model
class DeepFM(WideDeep):
    """An FM and an MLP side by side over the same embeddings."""

    name = "deepfm"

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return super().forward(inputs) + fm_interaction(inputs.emb)
