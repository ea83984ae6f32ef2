"""numba compilation helpers shared by the L1 kernels.

``batch_kernel`` compiles one Python function twice, serial and with
``parallel=True`` (``prange`` loops run as plain ranges in the serial build), and
dispatches on the size of the work: an OpenMP parallel region costs tens of
microseconds on a quiet machine and milliseconds when the cores are shared, so
small batches run serially and only large ones fan out.

One more thing is decided here for the whole process, before numba starts its thread
pool: how long idle OpenMP threads spin. numba's parallel kernels run on the system
``libgomp`` and torch bundles its own, so a training process holds two OpenMP pools on
the same cores, and each pool's threads busy-wait after every parallel region
(``libgomp`` spins 300,000 iterations, about a millisecond or more, before it sleeps)
while the other pool, the prefetch thread or another process wants those cores. Unless
the user has set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, importing this module sets
``GOMP_SPINCOUNT`` to :data:`OPENMP_SPINCOUNT`: idle threads spin a few microseconds (about
what waking a sleeping thread costs) and then sleep. ``libgomp`` reads it when it is
loaded, so it applies to numba's pool always and to torch's when kraken is imported
before torch (as the ``kraken`` command does).
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import numba as nb

__all__ = ["OPENMP_SPINCOUNT", "PARALLEL_MIN_WORK", "batch_kernel"]

OPENMP_SPINCOUNT = 1000
"""Busy-wait iterations of an idle ``libgomp`` thread before it sleeps (default 300,000)."""

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = str(OPENMP_SPINCOUNT)

PARALLEL_MIN_WORK = 1 << 18
"""Elements of work (e.g. rows x dim) from which the parallel build is used."""


def batch_kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``kernel(work, *args)`` runs ``fn(*args)`` serial or parallel by ``work``."""
    serial = nb.njit(cache=True, nogil=True)(fn)
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel",
                               fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_parallel"
    clone.__module__ = fn.__module__
    parallel = nb.njit(cache=True, nogil=True, parallel=True)(clone)

    def dispatch(work: int, *args: Any) -> Any:
        return (parallel if work >= PARALLEL_MIN_WORK else serial)(*args)

    dispatch.__name__ = fn.__name__
    dispatch.__doc__ = fn.__doc__
    dispatch.serial = serial  # type: ignore[attr-defined]
    dispatch.parallel = parallel  # type: ignore[attr-defined]
    return dispatch
