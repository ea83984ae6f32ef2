"""How to train: :class:`TrainerConfig` and the dense-optimizer choice.

Choices are Enums defined here once (as :class:`kraken.config.Precision` is for
storage precision); config files name them by value (``dense_optimizer = "adam"``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

import torch

from kraken.config import check_enum, check_int, check_positive

__all__ = ["DenseOptimizer", "TrainerConfig"]


class DenseOptimizer(enum.Enum):
    """The ``torch.optim`` optimizer of the dense (worker-side) parameters."""

    ADAM = "adam"
    ADAGRAD = "adagrad"
    SGD = "sgd"

    @classmethod
    def parse(cls, value: DenseOptimizer | str, path: str = "dense_optimizer"
              ) -> DenseOptimizer:
        """``value`` as a member; a :class:`ConfigError` listing the choices otherwise."""
        return check_enum(path, value, cls)

    def build(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` with learning rate ``lr``."""
        cls = {DenseOptimizer.ADAM: torch.optim.Adam, DenseOptimizer.ADAGRAD: torch.optim.Adagrad,
               DenseOptimizer.SGD: torch.optim.SGD}[self]
        return cls(params, lr=lr)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How to train. Counts are in samples unless named otherwise.

    Attributes:
        batch_size: samples per step.
        dense_optimizer / dense_lr: torch optimizer of the dense parameters
            (a :class:`DenseOptimizer` or its value, e.g. ``"adam"``).
        window: samples per progressive-evaluation window.
        log_every_s: seconds between progress records.
        checkpoint_every_samples / checkpoint_every_s: checkpoint cadence (None = off).
        keep_checkpoints: newest checkpoints kept (with the ones they build on).
        checkpoint_full_every: every how many checkpoints one is full; the others hold
            only the rows changed since the checkpoint before (1 = always full).
        max_samples: stop after this many samples (None = until the stream ends).
        prefetch: batches read and deduplicated ahead.
        pipeline: also pull the next batch's rows in the background while the current
            batch computes. Rows then miss the previous batch's update (one step of
            staleness, as in an asynchronous PS); runs stay deterministic, but a resumed
            run is no longer bit-identical to an uninterrupted one.
        seed: seeds the trainer's ``torch.Generator``, the source of the model's
            randomness while training (dropout); its state is checkpointed, so a resumed
            run draws what the uninterrupted run would have drawn.
    """

    batch_size: int = 4096
    dense_optimizer: DenseOptimizer = DenseOptimizer.ADAM
    dense_lr: float = 1e-3
    window: int = 100_000
    log_every_s: float = 2.0
    checkpoint_every_samples: int | None = None
    checkpoint_every_s: float | None = None
    keep_checkpoints: int = 3
    checkpoint_full_every: int = 1
    max_samples: int | None = None
    prefetch: int = 2
    pipeline: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, lo=1)
        object.__setattr__(self, "dense_optimizer", DenseOptimizer.parse(self.dense_optimizer))
        check_positive("dense_lr", self.dense_lr)
        check_int("window", self.window, lo=1)
        check_positive("log_every_s", self.log_every_s)
        if self.checkpoint_every_samples is not None:
            check_int("checkpoint_every_samples", self.checkpoint_every_samples, lo=1)
        if self.checkpoint_every_s is not None:
            check_positive("checkpoint_every_s", self.checkpoint_every_s)
        check_int("keep_checkpoints", self.keep_checkpoints, lo=1)
        check_int("checkpoint_full_every", self.checkpoint_full_every, lo=1)
        if self.max_samples is not None:
            check_int("max_samples", self.max_samples, lo=0)
        check_int("prefetch", self.prefetch, lo=1)
        check_int("seed", self.seed, lo=0)
