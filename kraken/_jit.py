"""numba compilation helpers shared by the L1 kernels.

``batch_kernel`` compiles one Python function twice, serial and with
``parallel=True`` (``prange`` loops run as plain ranges in the serial build), and
dispatches on the size of the work: an OpenMP parallel region costs tens of
microseconds on a quiet machine and milliseconds when the cores are shared, so
small batches run serially and only large ones fan out.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba as nb

__all__ = ["PARALLEL_MIN_WORK", "batch_kernel"]

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
