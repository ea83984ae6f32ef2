"""Dense training state as named numpy arrays (no pickle): model weights and optimizer.

``torch.optim`` state dicts hold tensors plus JSON-able ``param_groups``; the tensors
become arrays named ``optim/<param index>/<key>`` and the groups travel as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["dense_state", "load_dense_state"]


def dense_state(model: nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)`` capturing ``model`` and ``optimizer`` exactly."""
    arrays = {f"model/{k}": v.detach().cpu().numpy().copy()
              for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            arrays[f"optim/{idx}/{key}"] = t.detach().cpu().numpy().copy()
    return arrays, {"param_groups": json.loads(json.dumps(sd["param_groups"]))}


def load_dense_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                     arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Inverse of :func:`dense_state`; raises ``KeyError``/``RuntimeError`` on mismatch."""
    model.load_state_dict({k[len("model/"):]: torch.from_numpy(v.copy())
                           for k, v in arrays.items() if k.startswith("model/")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in arrays.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = torch.from_numpy(v.copy())
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
