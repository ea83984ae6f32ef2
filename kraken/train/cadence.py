"""When the trainer logs and checkpoints: interval bookkeeping over an injected clock.

The clock is any ``() -> float`` of seconds (``time.perf_counter`` by default); tests
pass a fake one, so no test depends on how fast a machine is. The clock is read once per
batch (:meth:`Cadence.tick`); the questions (``log_due``, ``checkpoint_due``) change
nothing, and the ``*ed`` methods record that the thing was done. Eviction is not the
trainer's: every parameter-server shard evicts on its own cadence and clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kraken.train.settings import TrainerConfig

__all__ = ["Cadence", "Clock"]

Clock = Callable[[], float]


class Cadence:
    """Log every ``log_every_s`` seconds, checkpoint every ``checkpoint_every_samples``
    samples and/or ``checkpoint_every_s`` seconds."""

    def __init__(self, config: TrainerConfig, clock: Clock = time.perf_counter) -> None:
        self.config = config
        self.clock = clock
        self.start(0)

    def start(self, samples: int) -> None:
        """Begin a run at ``samples`` samples trained: every interval restarts now."""
        t = self.clock()
        self.t = self.start_t = self.log_t = self.ckpt_t = t
        self.start_samples = self.log_samples = self.ckpt_samples = samples

    def tick(self) -> None:
        """Read the clock once: the time of this batch for every question below."""
        self.t = self.clock()

    def log_due(self) -> bool:
        return self.t - self.log_t >= self.config.log_every_s

    def since_log(self, samples: int) -> tuple[float, int]:
        """``(seconds, samples)`` since the last progress record (or the start)."""
        return self.t - self.log_t, samples - self.log_samples

    def logged(self, samples: int) -> None:
        self.log_t, self.log_samples = self.t, samples

    def checkpoint_due(self, samples: int) -> bool:
        c = self.config
        return ((c.checkpoint_every_samples is not None
                 and samples - self.ckpt_samples >= c.checkpoint_every_samples)
                or (c.checkpoint_every_s is not None
                    and self.t - self.ckpt_t >= c.checkpoint_every_s))

    def checkpointed(self, samples: int) -> None:
        """A checkpoint was written; the seconds interval counts from when it finished."""
        self.ckpt_t, self.ckpt_samples = self.clock(), samples

    def elapsed(self) -> float:
        """Seconds since :meth:`start` (reads the clock)."""
        return self.clock() - self.start_t
