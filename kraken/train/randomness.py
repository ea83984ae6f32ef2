"""The trainer's randomness: one seeded ``torch.Generator``, checkpointed with the run.

Torch modules such as ``nn.Dropout`` draw from torch's global CPU generator and take no
generator argument. :func:`generator_scope` lends them the trainer's generator for the
duration of a forward pass: the global state is forked, set from the generator, and
after the pass the advanced state is stored back into the generator; the caller's global
state is restored untouched. So a model's randomness is a pure function of the trainer
seed and the batches trained, and resuming from a checkpoint (which stores the
generator's state) draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["generator_scope", "seeded_scope", "training_generator"]

_TRAINING_STREAM = 0x6472  # separates the training draws from the weight-initialisation ones


def training_generator(seed: int) -> torch.Generator:
    """A CPU generator for training-time randomness, derived from ``seed``."""
    derived = int(np.random.SeedSequence([seed, _TRAINING_STREAM]).generate_state(1)[0])
    return torch.Generator().manual_seed(derived)


@contextlib.contextmanager
def generator_scope(generator: torch.Generator) -> Iterator[None]:
    """Run the body with torch's global CPU RNG drawn from ``generator`` (see above)."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(torch.get_rng_state())


@contextlib.contextmanager
def seeded_scope(seed: int) -> Iterator[None]:
    """Run the body with torch's global CPU RNG seeded by ``seed``, restoring it after:
    model construction is reproducible without reseeding the caller's process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
