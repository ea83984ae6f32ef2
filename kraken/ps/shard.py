"""``Shard``: one parameter-server shard's state machine, without any network code.

A shard holds its slice of every table of a run (one :class:`SparseTable` per table,
with that table's config and the shard's share of the row budget). The gRPC server
(:mod:`kraken.ps.server`) and the in-process client (:class:`kraken.ps.ShardedPS` over
local shards) call exactly these verbs, so everything here is tested without sockets.

Invariants (the parameter-server contract of :mod:`kraken.ps.protocol`, per shard):

- ``push`` validates every table's part before changing any, so a push is applied
  wholly or not at all on this shard. Concurrent pushes from many writers are all
  applied, each under its table's lock, in arrival order; gradients of one row from
  two pushes both reach its optimizer state.
- Requests that change state carry an optional ``request_id``. A shard remembers the
  replies of its most recent requests (a window bounded in count and bytes); a request
  whose id is in the window is not executed again but answered with the first reply
  (or the first error). A retry after a lost reply therefore never counts an access or
  admits a key twice, provided it arrives within the window.
- Time and eviction belong to the shard: its clock is the largest ``now`` it has been
  sent, and every ``evict_every`` pushes it runs the eviction policies at that clock.
- Every table has its own version on every shard; delta cursors are per shard.
- ``checkpoint`` names the checkpoint this shard's state was restored from (``None`` for
  a fresh shard). A client refuses shards that disagree, so a shard restarted from an
  older checkpoint than its peers never silently mixes two cuts.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kraken.arrayfile import read_arrays, read_header, write_arrays
from kraken.config import check_int
from kraken.errors import (
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    InputError,
)
from kraken.ps.router import Router
from kraken.table import SparseTable, TableConfig, TableDelta, TableStats
from kraken.table.codec import decode as decode_weights
from kraken.types import F32, NOW_MAX, Keys

__all__ = ["Shard", "ShardInfo", "shard_configs"]

T = TypeVar("T")


def shard_configs(tables: Mapping[str, TableConfig], n_shards: int) -> dict[str, TableConfig]:
    """Each table's config for one of ``n_shards`` shards: the row budget divided evenly
    (rounded up, so the shards together hold at least the configured capacity)."""
    check_int("ps.shards", n_shards, lo=1)
    return {name: dataclasses.replace(cfg, capacity=-(-cfg.capacity // n_shards))
            for name, cfg in tables.items()}


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """What a shard says about itself in the handshake."""

    index: int
    of: int
    checkpoint: str | None
    tables: dict[str, dict[str, Any]]
    clock: int
    incarnation: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_STATE_FILE = "shard.kdat"
_STATE_KIND = "kraken.ps_shard"


def _read_state(directory: Path) -> int:
    """Pushes counted by the shard that wrote ``directory`` (0 for checkpoints written
    before shards kept their own state)."""
    path = directory / _STATE_FILE
    if not path.is_file():
        return 0
    meta, _ = read_arrays(path)
    if meta.get("kind") != _STATE_KIND or not isinstance(meta.get("pushes"), int):
        raise CorruptCheckpointError(f"{path}: not a shard state file")
    return int(meta["pushes"])


def _as_now(now: Any) -> int:
    if isinstance(now, bool) or not isinstance(now, (int, np.integer)) \
            or not 0 <= int(now) <= NOW_MAX:
        raise InputError(f"now must be an integer in [0, {NOW_MAX}], got {now!r}")
    return int(now)


class _Entry:
    __slots__ = ("done", "error", "nbytes", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Any = None
        self.error: BaseException | None = None
        self.nbytes = 0


class _Replies:
    """The last ``size`` replies by request id, at most ``max_bytes`` of row payload."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size, self.max_bytes = size, max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.replayed = 0

    def run(self, request_id: str | None, fn: Callable[[], T]) -> T:
        if request_id is None:
            return fn()
        with self._lock:
            found = self._entries.get(request_id)
            if found is None:
                entry = self._entries[request_id] = _Entry()
            else:
                entry = found
                self.replayed += 1
        if found is not None:
            entry.done.wait()
            if entry.error is not None:
                raise entry.error
            return entry.reply  # type: ignore[no-any-return]
        try:
            entry.reply = fn()
            return entry.reply  # type: ignore[no-any-return]
        except BaseException as exc:
            entry.error = exc
            raise
        finally:
            entry.done.set()
            self._account(entry)

    def _account(self, entry: _Entry) -> None:
        reply = entry.reply
        entry.nbytes = sum(a.nbytes for a in reply.values()) if isinstance(reply, dict) else 0
        with self._lock:
            self._bytes += entry.nbytes
            while self._entries and (len(self._entries) > self.size
                                     or self._bytes > self.max_bytes):
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes


class Shard:
    """Shard ``index`` of ``of``: its slice of every table, its clock, its eviction cadence.

    Args:
        tables: name -> this shard's config of that table (see :func:`shard_configs`).
        index, of: this shard's position and the number of shards.
        evict_every: pushes between eviction passes at the shard's clock (0: never; the
            ``evict`` verb still works).
        replay_window: requests whose replies are kept for retries (count).
        replay_bytes: bound on the row bytes those replies hold.
    """

    def __init__(self, tables: Mapping[str, TableConfig], *, index: int = 0, of: int = 1,
                 evict_every: int = 10, replay_window: int = 64,
                 replay_bytes: int = 256 << 20) -> None:
        if not tables:
            raise InputError("a parameter server needs at least one table")
        check_int("ps.shard", index, lo=0, hi=of - 1)
        check_int("ps.evict_every", evict_every, lo=0)
        check_int("ps.replay_window", replay_window, lo=1)
        self.index, self.of, self.evict_every = index, of, evict_every
        self._configs = dict(tables)
        self._tables = {name: SparseTable(cfg) for name, cfg in tables.items()}
        self._replies = _Replies(replay_window, replay_bytes)
        self._lock = threading.Lock()
        self._clock = 0
        self._pushes = 0
        self.checkpoint: str | None = None
        self.incarnation = uuid.uuid4().hex
        """Random per shard object: a restarted shard process has a new one."""

    # -- queries -------------------------------------------------------------------------

    @property
    def tables(self) -> dict[str, TableConfig]:
        return dict(self._configs)

    def info(self) -> ShardInfo:
        return ShardInfo(index=self.index, of=self.of, checkpoint=self.checkpoint,
                         tables={n: c.to_dict() for n, c in self._configs.items()},
                         clock=self._clock, incarnation=self.incarnation)

    def stats(self) -> dict[str, TableStats]:
        return {name: t.stats() for name, t in self._tables.items()}

    def delta(self, table: str, since: int) -> TableDelta:
        return self._get(table).touched_since(since)

    def snapshot(self, table: str) -> TableDelta:
        t = self._get(table)
        rows = t.export()
        return TableDelta(since=0, version=rows.version, keys=rows.keys,
                          weights=decode_weights(rows.weights, t.config.precision),
                          evicted=np.empty(0, dtype=np.int64))

    @property
    def replayed(self) -> int:
        """Requests answered from the reply window instead of being executed again."""
        return self._replies.replayed

    # -- verbs that change state ---------------------------------------------------------

    def pull(self, keys: Mapping[str, Keys], *, train: bool = False, now: int | None = None,
             request_id: str | None = None) -> dict[str, F32]:
        """Rows of ``keys[table]: int64[N_t]`` as ``float32[N_t, D_t]`` for every table."""
        names = self._check_tables(keys)
        if not train:
            return {n: self._tables[n].lookup(keys[n]) for n in names}
        if now is None:
            raise InputError("a training pull needs `now`")
        now = _as_now(now)

        def run() -> dict[str, F32]:
            self._advance(now)
            return {n: self._tables[n].lookup(keys[n], train=True, now=now) for n in names}

        return self._replies.run(request_id, run)

    def push(self, grads: Mapping[str, tuple[Keys, F32]], now: int, *,
             request_id: str | None = None) -> None:
        """One optimizer step per table: ``grads[table] = (keys int64[N], float32[N, D])``.

        Every part is validated before any is applied; then every ``evict_every``-th
        push runs the eviction policies at the shard's clock.
        """
        names = self._check_tables(grads)
        for n in names:
            keys, g = grads[n]
            self._tables[n].check_gradients(keys, g, now)

        def run() -> None:
            self._advance(now)
            for n in names:
                keys, g = grads[n]
                self._tables[n].apply_gradients(keys, g, now)
            with self._lock:
                self._pushes += 1
                due = self.evict_every and self._pushes % self.evict_every == 0
                clock = self._clock
            if due:
                self.evict(clock)

        self._replies.run(request_id, run)

    def evict(self, now: int | None = None) -> dict[str, int]:
        """Run every table's eviction policies at ``now`` (default: the shard's clock)."""
        t = self._advance(_as_now(now)) if now is not None else self._clock
        return {name: int(tab.evict(t).shape[0]) for name, tab in self._tables.items()}

    # -- checkpoints ---------------------------------------------------------------------

    def save(self, directory: str | Path, since: Mapping[str, int] | None = None
             ) -> dict[str, dict[str, int]]:
        """Write every table to ``directory/<table>.ktab`` (atomic per file).

        With ``since`` (table -> a version this shard reported for it, as ``"version"``
        in an earlier save's report), incremental files: only the rows changed after it
        and the keys evicted since (raises :class:`~kraken.errors.StaleVersionError` when
        those evictions are no longer remembered: save in full then).

        Returns file name -> ``{"bytes": size, "crc32": checksum of the array checksums}``
        (table files also ``"version"``, the table version they hold) for the manifest
        (prepare): the caller commits only once every shard answered.
        """
        d = Path(directory)
        if since is not None:
            missing = sorted(set(self._tables) - set(since))
            if missing:
                raise CheckpointMismatchError(f"shard {self.index}: no base version for "
                                              f"table(s) {missing}")
        files: dict[str, dict[str, int]] = {}
        try:
            d.mkdir(parents=True, exist_ok=True)
            with self._lock:
                state = {"kind": _STATE_KIND, "index": self.index, "of": self.of,
                         "pushes": self._pushes, "clock": self._clock}
            write_arrays(d / _STATE_FILE, state, {})
            for name, t in self._tables.items():
                t.save(d / f"{name}.ktab", since=None if since is None else int(since[name]))
            for path in [d / _STATE_FILE] + [d / f"{n}.ktab" for n in self._tables]:
                head = read_header(path)
                files[path.name] = {"bytes": path.stat().st_size, "crc32": head.digest}
                if path.suffix == ".ktab":
                    files[path.name]["version"] = int(head.meta["version"])
        except OSError as exc:
            raise CheckpointError(f"shard {self.index}: cannot write {d}: {exc}") from exc
        return files

    def load(self, sources: list[str | Path], *, source_router: Router, router: Router,
             checkpoint: str, deltas: Sequence[Sequence[str | Path]] = ()) -> None:
        """Restore this shard from the shard directories of a checkpoint.

        ``sources[i]`` is the directory that shard ``i`` of ``source_router`` wrote in a
        full save; ``deltas`` lists, oldest first, the shard directories of incremental
        saves made after it with the same layout, applied in order. With the same layout,
        shard ``i`` loads ``sources[i]`` (then ``delta[i]`` of each) exactly (rows,
        optimizer state, metadata, counters, random state). With another layout
        (resharding), it takes from every source the rows whose keys ``router`` sends to
        this shard; see :meth:`SparseTable.load_chain` for what carries over. All files
        are validated before anything is replaced; on error the shard is unchanged.
        """
        if len(sources) != source_router.n_shards or \
                any(len(d) != source_router.n_shards for d in deltas):
            raise CheckpointMismatchError(f"checkpoint has {len(sources)} shard directories "
                                          f"for a layout of {source_router.n_shards}")
        if router.n_shards != self.of:
            raise CheckpointMismatchError(f"router of {router.n_shards} shards for shard "
                                          f"{self.index} of {self.of}")
        same = source_router == router
        last = list(deltas[-1]) if deltas else list(sources)
        pushes = [_read_state(Path(src)) for src in last]
        fresh: dict[str, SparseTable] = {}
        for name, cfg in self._configs.items():
            chain = [[Path(s) / f"{name}.ktab" for s in step] for step in [sources, *deltas]]
            missing = [str(f) for step in chain for f in step if not f.is_file()]
            if missing:
                raise CheckpointMismatchError(f"no saved table {name!r}: {missing}")
            fresh[name] = SparseTable(cfg)
            if same:
                fresh[name].load_chain([[step[self.index]] for step in chain])
            else:
                fresh[name].load_chain(chain, select=lambda k: router.shard_of(k) == self.index)
        with self._lock:
            self._tables = fresh
            self._clock = max(t.stats().clock for t in fresh.values())
            # the eviction cadence continues where it was (exactly, with the same layout)
            self._pushes = pushes[self.index] if same else max(pushes)
            self.checkpoint = checkpoint

    def close(self) -> None:
        """Nothing to release in process (the gRPC server stops separately)."""

    # -- internals -----------------------------------------------------------------------

    def _get(self, table: str) -> SparseTable:
        try:
            return self._tables[table]
        except KeyError:
            raise InputError(f"unknown table {table!r}; tables are {sorted(self._tables)}"
                             ) from None

    def _check_tables(self, parts: Mapping[str, Any]) -> list[str]:
        unknown = [n for n in parts if n not in self._tables]
        if unknown:
            raise InputError(f"unknown table(s) {unknown}; tables are {sorted(self._tables)}")
        return list(parts)

    def _advance(self, now: int) -> int:
        with self._lock:
            self._clock = max(self._clock, int(now))
            return self._clock
