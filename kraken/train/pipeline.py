"""The trainer's input pipeline: a background thread that reads, dedupes and (optionally)
pulls batches ahead of the training loop, in stream order.

::

    prefetch thread:  stream.batches -> prepare (dedupe IDs) [-> gate -> pull rows] -> queue
    main thread:      queue -> learn -> [gate] push -> ...

Without a :class:`PullGate` only reading and deduplication overlap compute; every PS call
stays on the main thread. With one, pulls run in the background too, ordered against
the main thread's pushes so a pipelined run stays deterministic.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kraken.nn.embedding import Prepared, Pulled

__all__ = ["Prefetcher", "PullGate"]


class PullGate:
    """Orders background pulls between pushes, so a pipelined run stays deterministic.

    ``pull(j)`` may start once batch ``j - 2`` is fully pushed, and
    ``push(j)`` waits until ``pull(j + 1)`` is done or the stream has ended: every pull
    of batch ``j + 1`` lands exactly between ``push(j - 1)`` and ``push(j)``. While the
    reader is held (a log stream's checkpoint) pushes do not wait: the pull of the next
    batch then follows them. On a PS with ``background_push`` a push counts as done once
    queued; the pull the gate then lets start waits inside the PS until it is applied.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.pushed = self.pulled = -1
        self.ended = self.stopped = self.parked = False

    def _set(self, **kw: Any) -> None:
        with self._cv:
            for k, v in kw.items():
                setattr(self, k, v)
            self._cv.notify_all()

    def before_pull(self, j: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self.pushed >= j - 2 or self.stopped)

    def before_push(self, j: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self.pulled >= j + 1 or self.ended or self.stopped
                              or self.parked)

    def after_pull(self, j: int) -> None:
        self._set(pulled=j)

    def after_push(self, j: int) -> None:
        self._set(pushed=j)

    def park(self, parked: bool) -> None:
        """The reader is held (no pull comes until it is released) or reads again."""
        self._set(parked=parked)

    def end(self) -> None:
        """No more pulls will come (the stream ended or failed)."""
        self._set(ended=True)

    def stop(self) -> None:
        """Release every waiter: the run is over."""
        self._set(stopped=True)


class Prefetcher:
    """Reads and dedupes (and, with a gate, pulls) batches in a background thread, in order.

    Iterating yields ``Prepared`` items (``Pulled`` ones with a gate) in stream order; an
    exception in the thread is re-raised in the iterating thread. ``close`` stops the
    thread; call it on every path out (``with Prefetcher(...) as items``).

    ``hold``/``quiet``/``release`` quiesce it: after ``hold`` the reader parks before its
    next read, and once ``quiet()`` is True every batch it read has been handed out, so
    the stream's own position describes exactly the batches consumed.
    """

    _END = object()

    def __init__(self, batches: Iterator[Any], prepare: Callable[[Any], Prepared],
                 depth: int, pull: Callable[[Prepared], Pulled] | None = None,
                 gate: PullGate | None = None) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._held = self._parked = self._done = False
        self.gate = gate
        self._thread = threading.Thread(target=self._run, args=(batches, prepare, pull),
                                        name="kraken-prefetch", daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[Any], prepare: Callable[[Any], Prepared],
             pull: Callable[[Prepared], Pulled] | None) -> None:
        try:
            it = iter(batches)
            j = 0
            while True:
                if not self._wait_while_held():
                    return
                b = next(it, self._END)
                if b is self._END:
                    break
                item: Any = prepare(b)
                if pull is not None and self.gate is not None:
                    self.gate.before_pull(j)
                    if self._stop.is_set():
                        return
                    item = pull(item)
                    self.gate.after_pull(j)
                j += 1
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
                self._notify()
            self._q.put(self._END)
        except BaseException as exc:  # surfaced in the main thread
            self._q.put(exc)
        finally:
            if self.gate is not None:
                self.gate.end()
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def _wait_while_held(self) -> bool:
        """Park between batches while held; False when the prefetcher is closing."""
        with self._cv:
            if self._held:
                self._parked = True
                if self.gate is not None:
                    self.gate.park(True)
                self._cv.notify_all()
                while self._held and not self._stop.is_set():
                    self._cv.wait(0.1)
                self._parked = False
                if self.gate is not None:
                    self.gate.park(False)
        return not self._stop.is_set()

    def _notify(self) -> None:
        with self._cv:
            self._cv.notify_all()

    # -- quiescing (checkpoints of streams whose position is a state) -------------------

    def hold(self) -> None:
        """Stop reading after the batch being read now; batches already read stay queued."""
        with self._cv:
            self._held = True

    def release(self) -> None:
        """Read again after :meth:`hold`."""
        with self._cv:
            self._held = False
            self._cv.notify_all()

    def quiet(self) -> bool:
        """After :meth:`hold`: wait until the reader is parked (or done) with nothing queued
        (True), or until a batch is queued for the caller to train first (False)."""
        with self._cv:
            while True:
                if not self._q.empty():
                    return False
                if self._parked or self._done:
                    return True
                self._cv.wait(0.1)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._notify()
        if self.gate is not None:
            self.gate.stop()
        self._thread.join(timeout=5)
