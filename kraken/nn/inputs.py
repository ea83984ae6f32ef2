"""What a ranking model receives: plain tensors, rows already read (from a PS or a store).

Models are pure ``torch.nn.Module`` s over these tensors; the sparse plumbing lives in
:mod:`kraken.nn.layout` (dedupe, gather, pool) and :mod:`kraken.nn.embedding` (pull, push).

Shapes (``B`` samples, ``F`` sparse fields = single-valued fields followed by the
pooled multi-valued ones, ``D`` embedding dim, ``Dd`` dense features)::

    emb       float32[B, F, D]   one embedding per field (multi-valued fields pooled)
    wide      float32[B, F]      first-order weight per field (dim-1 "wide" table), or None
    dense     float32[B, Dd]     dense features (Dd may be 0)
    sequences {name: (float32[B, L, D], bool[B, L])}   unpooled multi-valued fields with
                                 their padding mask, for attention models (DIN)
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["ModelInputs"]


@dataclasses.dataclass
class ModelInputs:
    """The tensors of one batch (see the module docstring)."""

    emb: torch.Tensor
    dense: torch.Tensor
    wide: torch.Tensor | None = None
    sequences: dict[str, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(
        default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.emb.shape[0])
