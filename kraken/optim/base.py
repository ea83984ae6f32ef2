"""The sparse-optimizer contract.

A sparse optimizer updates embedding rows in place, in batch, keeping its state
in a fixed number of float32 columns per row (its *state width*). It never
allocates per-row state of its own: the table owns the arena.

Invariants every implementation keeps (checked by ``tests/contracts``):

- ``update`` touches only ``weights[rows]`` and ``state[rows]``;
- ``rows`` holds no duplicates (the table sums duplicate keys' gradients first);
- the result for a row depends only on that row's weights, state and gradient,
  so the order of rows in the batch does not matter;
- ``init_state`` writes the state of freshly created rows.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from kraken.config import Tagged, build_from_dict, check_positive
from kraken.config import register as _register
from kraken.errors import ConfigError
from kraken.optim.chains import NO_META, sum_chains, touch_rows
from kraken.types import F32, Rows

__all__ = ["MetadataInStep", "SparseOptimizer", "optimizer_from_dict", "register"]

_REGISTRY: dict[str, type[SparseOptimizer]] = {}


def register(cls: type[SparseOptimizer]) -> type[SparseOptimizer]:
    """Class decorator: make ``cls`` loadable by its ``kind`` from a saved config.

    Kinds are unique: another class under a taken kind raises ``ConfigError``, as every
    registry does (:func:`kraken.config.register`).
    """
    return _register(_REGISTRY, cls.kind, cls, "optimizer")  # type: ignore[no-any-return]


class SparseOptimizer(Tagged, abc.ABC):
    """Hyperparameters (a frozen dataclass) plus a batched, in-place numba update.

    Shapes: ``weights: float32[R, D]`` (R rows of the arena or a scratch copy),
    ``state: float32[R, S]`` with ``S == state_width(D)``, ``rows: int64[U]``
    unique row indices into both, ``grads: float32[U, D]`` one summed gradient per row.
    """


    @abc.abstractmethod
    def state_width(self, dim: int) -> int:
        """Float32 state columns per row for embedding dimension ``dim``."""

    def init_state(self, state: F32) -> None:
        """Write the initial state of new rows, ``state: float32[U, S]`` (default zeros)."""
        state[...] = 0.0

    @abc.abstractmethod
    def update(self, weights: F32, state: F32, rows: Rows, grads: F32) -> None:
        """Apply one step to ``weights[rows]`` and ``state[rows]`` in place."""

    def update_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                      first: np.ndarray, nxt: np.ndarray) -> None:
        """:meth:`update` of ``rows: int64[U]`` with the summed gradient chains of
        ``grads: float32[N, D]`` (``first: int32[U]``, ``nxt: int32[N]``; see
        :mod:`kraken.optim.chains`): the same result as ``update(weights, state, rows,
        sum_chains(grads, first, nxt))``, bit for bit.

        This default sums the chains into a ``float32[U, D]`` array first; optimizers with
        a fused kernel sum each chain and step its row in one parallel pass. Kernels are
        ``nogil``.
        """
        self.update(weights, state, rows, sum_chains(grads, first, nxt))

    def step_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                    first: np.ndarray, nxt: np.ndarray, last_seen: np.ndarray,
                    stamp: np.ndarray, now: int, version: int) -> None:
        """:meth:`update_groups`, then ``last_seen[rows] = now`` and ``stamp[rows] =
        version`` (``int32[R]`` metadata columns of the same rows): a push's whole write.

        Optimizers with a fused kernel write the metadata in the same parallel task as the
        step (one visit per row); this default writes it after, in a parallel pass of its
        own (measured faster for AdaGrad, whose step then keeps fewer cache misses in
        flight).
        """
        self.update_groups(weights, state, rows, grads, first, nxt)
        touch_rows(rows, last_seen, stamp, now, version)



class MetadataInStep:
    """Mixin for optimizers whose fused kernel (their :meth:`~SparseOptimizer.step_groups`)
    writes ``last_seen``/``stamp`` in the same task as the step: :meth:`update_groups` is
    that kernel given ``NO_META`` columns (it then writes no metadata). Put it before
    :class:`SparseOptimizer` in the bases."""

    def update_groups(self, weights: F32, state: F32, rows: Rows, grads: F32,
                      first: np.ndarray, nxt: np.ndarray) -> None:
        self.step_groups(weights, state, rows, grads, first, nxt,  # type: ignore[attr-defined]
                         NO_META, NO_META, 0, 0)


def optimizer_from_dict(d: dict[str, Any], path: str = "optimizer") -> SparseOptimizer:
    """Rebuild an optimizer from :meth:`SparseOptimizer.to_dict` output or a config table."""
    return build_from_dict(_REGISTRY, d, path)  # type: ignore[no-any-return]


def _check_f32_positive(path: str, value: Any) -> float:
    """A number > 0 that stays finite and > 0 when rounded to float32, as the kernels use it.

    ``eps == 0`` would make a zero gradient on a zero accumulator ``0 / 0 = NaN``;
    ``lr = 1e39`` would round to ``inf`` and do the same with ``inf * 0``.
    """
    v = check_positive(path, value)
    f = np.float32(v) if v <= float(np.finfo(np.float32).max) else np.float32(np.inf)
    if not (np.isfinite(f) and f > 0):
        raise ConfigError(f"{path}: must be a positive float32 (between 1.4e-45 and 3.4e38), "
                          f"got {value!r}")
    return v


def _check_common(self: Any) -> None:
    """Validate ``lr`` and ``eps`` fields shared by most optimizers (both must be > 0).

    ``lr / eps`` must also fit a float32: it is the step scale of a row whose accumulator
    is still 0, and an infinite scale times a zero gradient is NaN.
    """
    lr = _check_f32_positive("lr", self.lr)
    if hasattr(self, "eps"):
        eps = _check_f32_positive("eps", self.eps)
        with np.errstate(over="ignore"):
            scale = np.float32(lr) / np.float32(eps)
        if not np.isfinite(scale):
            raise ConfigError(f"eps: lr / eps must stay below 3.4e38 (float32), got "
                              f"eps={self.eps!r} with lr={self.lr!r}")
