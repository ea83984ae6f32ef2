"""The metric contract, shared by every streaming metric (checked by
``tests/contracts/test_metric_contract.py``)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from kraken.errors import ConfigError

__all__ = ["Metric"]


class Metric(abc.ABC):
    """A streaming metric of binary predictions.

    ``update`` and ``reset`` and ``merge`` change state and return None; ``get`` and
    ``state`` change nothing. ``state()`` holds everything ``get`` depends on, as named
    numpy arrays (checkpointed without pickle); ``load_state(m.state())`` makes a metric
    equal to ``m``. ``merge(other)`` adds what ``other`` observed (``other`` unchanged);
    updating on ``a`` then merging a metric updated on ``b`` equals updating on ``a + b``.
    """

    bigger_is_better: bool

    @abc.abstractmethod
    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        """Observe labels ``y float32[B]`` in {0, 1} and probabilities ``p float32[B]``."""

    @abc.abstractmethod
    def get(self) -> float:
        """The metric over everything observed (NaN when undefined)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything observed."""

    @abc.abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the arrays that define the metric."""

    @abc.abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Become the metric whose ``state()`` was ``state``."""

    @abc.abstractmethod
    def merge(self, other: Any) -> None:
        """Add the observations of ``other`` (a metric of the same kind and settings)."""

    def _check_mergeable(self, other: Any, **settings: Any) -> None:
        if type(other) is not type(self):
            raise ConfigError(f"cannot merge {type(other).__name__} into "
                              f"{type(self).__name__}")
        for name, mine in settings.items():
            theirs = getattr(other, name)
            if theirs != mine:
                raise ConfigError(f"cannot merge {type(self).__name__}s with different "
                                  f"{name}: {mine} and {theirs}")
