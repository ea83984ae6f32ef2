"""``DirectoryFollower``: keeps a :class:`Replica` up to date by tailing a model directory.

Each poll (every ``poll_interval`` seconds, in a background thread, or ``poll()`` by hand)::

    no model yet, or replica ahead of the directory (it was reset)
                      -> load the newest snapshot
    next delta (version + 1) present          -> apply it, repeat
    snapshot of version + 1 present           -> load it (a restarted publisher), repeat
    a newer version exists but not version + 1 (a gap: files pruned, lost, or the follower
    fell behind)      -> load the newest snapshot newer than the replica, if any;
                         otherwise ask the publisher for one (``SNAPSHOT_REQUEST``) and wait

A file that vanishes while being read (pruned) is simply rescanned; a corrupt one counts
as a gap. Errors never stop the thread: they are counted and the last one is kept.

When the trainer's versions say the rows come from ``N`` shards, the follower follows
``N + 1`` streams with these same rules, each on its own: the trainer's (dense weights
and spec) under ``DIR/versions`` and shard ``i``'s rows under
``DIR/shards/shard-<i>/versions``. A gap in shard ``i``'s stream loads that shard's
newest snapshot (or asks that shard for one, ``DIR/shards/shard-<i>/SNAPSHOT_REQUEST``)
and leaves the other streams alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kraken.errors import (
    CheckpointError,
    CheckpointMismatchError,
    KrakenError,
    LifecycleError,
    VersionGapError,
)
from kraken.serving.directory import request_snapshot, scan_versions, shard_dir
from kraken.serving.replica import Replica
from kraken.serving.version import ModelVersion

__all__ = ["DirectoryFollower"]

_REQUEST_EVERY_S = 1.0


class _Stream:
    """One numbered stream of versions in ``folder`` (the rules of the module docstring).

    ``current()`` is the replica's version in this stream (None: nothing loaded yet);
    ``shard`` the shard whose rows the stream carries (None: the trainer's stream).
    """

    def __init__(self, follower: DirectoryFollower, folder: Path,
                 current: Callable[[], int | None], shard: int | None = None) -> None:
        self.follower, self.folder, self.current, self.shard = follower, folder, current, shard
        self.gaps = 0
        self._bad: set[Path] = set()
        self._in_gap = False
        self._last_request = 0.0

    def poll(self) -> int:
        applied = 0
        deltas, snapshots = scan_versions(self.folder)
        newest = max([0, *deltas, *snapshots])
        cur = self.current()
        if cur is None or cur > newest > 0:
            applied += self._load_newest_snapshot(snapshots, after=-1)
        while not self.follower._stop.is_set():
            cur = self.current()
            if cur is None:
                break
            nxt = cur + 1
            path = deltas.get(nxt) or snapshots.get(nxt)
            if path is not None and path not in self._bad:
                ok = self._apply(path)
                if ok is None:  # vanished (pruned): rescan
                    deltas, snapshots = scan_versions(self.folder)
                    continue
                if ok:
                    applied += 1
                    continue
            if newest <= cur:
                break
            # a gap: version + 1 is missing (or unusable) but newer versions exist
            if not self._in_gap:
                self.gaps += 1
                self.follower.gaps += 1
                self._in_gap = True
            got = self._load_newest_snapshot(snapshots, after=cur)
            if got:
                self._in_gap = False
                applied += got
                continue
            now = time.monotonic()
            if now - self._last_request >= _REQUEST_EVERY_S:
                request_snapshot(self.folder)
                self._last_request = now
            break
        return applied

    def _load_newest_snapshot(self, snapshots: dict[int, Path], after: int) -> int:
        for v in sorted(snapshots, reverse=True):
            if v <= after:
                return 0
            if snapshots[v] in self._bad:
                continue
            ok = self._apply(snapshots[v])
            if ok:
                return 1
        return 0

    def _apply(self, path: Path) -> bool | None:
        """True if applied, False if unusable (remembered), None if the file vanished."""
        try:
            version = ModelVersion.read(path)
            if version.shard != self.shard:
                raise CheckpointMismatchError(f"{path}: a version of shard {version.shard} "
                                              f"in the stream of shard {self.shard}")
            self.follower.replica.apply(version)
            return True
        except FileNotFoundError:
            return None
        except VersionGapError as exc:
            self.follower._note(exc)
            return False
        except (CheckpointError, KrakenError, OSError) as exc:
            self._bad.add(path)
            self.follower._note(exc)
            return False


class DirectoryFollower:
    """Applies the versions published in ``model_dir`` to ``replica`` (see the module)."""

    def __init__(self, replica: Replica, model_dir: str | os.PathLike[str], *,
                 poll_interval: float = 0.05) -> None:
        self.replica = replica
        self.model_dir = Path(model_dir)
        self.poll_interval = poll_interval
        self.gaps = 0  # gaps detected in every stream (each healed by a snapshot)
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dense = _Stream(self, self.model_dir,
                              lambda: self.replica.version if self.replica.loaded else None)
        self._shards: list[_Stream] = []

    @property
    def shard_gaps(self) -> list[int]:
        """Gaps detected in each shard's row stream (empty: the rows are not sharded)."""
        return [s.gaps for s in self._shards]

    # -- one step ------------------------------------------------------------------------

    def poll(self) -> int:
        """Apply every version that can be applied now, in every stream; returns how many."""
        applied = self._dense.poll()
        n = self.replica.n_shards if self.replica.loaded else 0
        while len(self._shards) < n:
            self._shards.append(self._shard_stream(len(self._shards)))
        del self._shards[n:]
        for stream in self._shards:
            applied += stream.poll()
        return applied

    def _shard_stream(self, i: int) -> _Stream:
        def current() -> int | None:
            v = self.replica.shard_versions
            return v[i] if self.replica.loaded and i < len(v) and v[i] > 0 else None

        return _Stream(self, shard_dir(self.model_dir, i), current, shard=i)

    def _note(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> DirectoryFollower:
        """Poll in a daemon thread until :meth:`stop`.

        Raises :class:`LifecycleError` if it is already running.
        """
        if self._thread is not None:
            raise LifecycleError("the follower is already running; stop() it first")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kraken-follow", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # never let the sync thread die  # noqa: BLE001
                self._note(exc)
            self._stop.wait(self.poll_interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait_for(self, version: int, timeout: float = 10.0) -> bool:
        """Block until the replica reaches ``version`` (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.replica.version >= version:
                return True
            time.sleep(0.01)
        return self.replica.version >= version
