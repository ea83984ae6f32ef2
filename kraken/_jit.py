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
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

__all__ = ["OPENMP_SPINCOUNT", "PARALLEL_MIN_WORK", "batch_kernel", "prefetch", "prefetch_at"]

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


# LLVM 17+ has only opaque pointers (intrinsic ``llvm.prefetch.p0``); llvmlite builds on
# older LLVM use typed ones (``llvm.prefetch.p0i8``).
_PREFETCH_FN = ("llvm.prefetch.p0" if llvm_version_info >= (17,) else "llvm.prefetch.p0i8")


def _prefetch_codegen(context, builder, signature, args):  # pragma: no cover - numba
    """Emit ``llvm.prefetch`` (read, keep in all cache levels, data) of the element of
    ``args[0]`` at the indices ``args[1:]``."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [context.cast(builder, v, t, nbtypes.intp)
           for v, t in zip(args[1:], signature.args[1:], strict=True)]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_FN)
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                      ir.Constant(i32, 1)])
    return context.get_dummy_value()


def _is_index(t: object) -> bool:
    return isinstance(t, nbtypes.Integer)


@intrinsic
def prefetch(typingctx, arr, idx):  # pragma: no cover - numba
    """``prefetch(arr, i)``: hint the CPU to load ``arr[i]``'s cache line (read, keep in all
    levels). A hint only: never faults, any ``i`` is allowed (``arr`` is 1-D, ``i`` int)."""
    if not isinstance(arr, nbtypes.Array) or arr.ndim != 1 or not _is_index(idx):
        return None
    return nbtypes.void(arr, idx), _prefetch_codegen


@intrinsic
def prefetch_at(typingctx, arr, r, c):  # pragma: no cover - numba
    """``prefetch_at(arr, r, c)``: :func:`prefetch` of ``arr[r, c]`` (``arr`` 2-D)."""
    if not isinstance(arr, nbtypes.Array) or arr.ndim != 2 or not (_is_index(r) and _is_index(c)):
        return None
    return nbtypes.void(arr, r, c), _prefetch_codegen
