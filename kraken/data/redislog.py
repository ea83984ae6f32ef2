"""``RedisLogStream``: training batches from an event log on Redis Streams (redis-py).

The log (format in :mod:`kraken.data.logconfig`): impressions on
``{prefix}:impressions:{p}``, actions on ``{prefix}:actions:{p}``; one consumer group per
key. Each round trip reads, for every key whose buffer has room, ``XINFO STREAM`` and
``XREADGROUP ... >`` in one server-side script, so the entries delivered and the stream's
counters (entries ever added, length, first entry) describe the same moment::

    read    keys ──XREADGROUP──> per-key buffers (delivered, not yet fed)
    merge   feed every buffered entry of a millisecond before the cutoff: the smallest
            last millisecond among keys that may hold more (ids order entries of
            different keys by millisecond only), so an action never overtakes its
            impression
    join    impressions featurized -> Joiner.add_impressions, actions -> add_actions,
            Joiner.emit() -> the samples decided -> batches of batch_size
    wait    caught up: XREAD BLOCK block_ms on every key, an empty batch if nothing came

Position (``position()``), per key: the last entry id fed to the joiner and ``read``,
the count of the key's entries up to it (trimmed ones included), plus the joiner's state
and the samples decided but not yet yielded. ``seek`` makes the next iteration start
right after it: ``XGROUP SETID`` to the fed id, whatever the group's bookkeeping said,
so entries delivered to a crashed trainer come again. ``commit`` ``XACK``\\ s every
pending entry up to it (any consumer's). A dead consumer's pending entries are claimed
(``XAUTOCLAIM``) when an iteration starts.

Gaps: when the stream's first entry lies after the delivered position, the entries
ever added minus those counted minus the stream's length were trimmed (``MAXLEN``)
before being read: reported with their count when the position passes them (logger
``kraken.data``, ``counters["lost"]``), never silently. Malformed entries are counted,
skipped and reported with their key and id. A lost connection (server restart) is
retried with doubling waits; meanwhile the stream yields empty batches, and reports the
outage when the server is back.

This module is the stream itself (the contract, the reading rounds, the feed into the
joiner, the batches); its parts: :mod:`~kraken.data._logserver` (every Redis command, the
read script, outages), :mod:`~kraken.data._logkeys` (each key's delivered entries and
positions, gap counting), :mod:`~kraken.data._logmerge` (the cutoff and the order across
keys), :mod:`~kraken.data._logposition` (what a position holds),
:mod:`~kraken.data._logentries` (parsing entries), :mod:`~kraken.data._logaudit` (the
audit trail of crash drills).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kraken.data._assemble import check_batch_args
from kraken.data._batchstate import empty_batch, take_rows
from kraken.data._lines import LOGGER
from kraken.data._logaudit import Audit
from kraken.data._logentries import (
    EntryBlock,
    entry_ids,
    format_id,
    parse_actions,
    parse_impressions,
)
from kraken.data._logkeys import KeyState
from kraken.data._logmerge import cutoff, merge_runs
from kraken.data._logposition import COUNTERS, Ready, position_state, read_position
from kraken.data._logserver import DOWN, LogServer, Outage
from kraken.data.base import Batch
from kraken.data.features import FeatureSpec
from kraken.data.join import Joiner
from kraken.data.logconfig import LogConfig
from kraken.errors import InputError

__all__ = ["RedisLogStream"]

REPORT_LIMIT = 100  # malformed entries reported one by one per iteration, then summaries


def _ids(blocks: list[EntryBlock]) -> np.ndarray:
    """``object[n]``: the entry ids of ``blocks`` end to end."""
    return np.concatenate([np.zeros(0, dtype=object)] + [b.ids for b in blocks])


class RedisLogStream:
    """Batches of joined samples from the log of ``config`` (see the module docstring).

    Implements :class:`kraken.data.base.LogStream`. ``joiner`` is the
    :class:`~kraken.data.join.Joiner` that turns impressions and actions into labelled
    samples (default: one built from ``config``); it is used by the thread that iterates
    ``batches`` and, under a lock, by ``position``.
    """

    def __init__(self, config: LogConfig, joiner: Joiner | None = None) -> None:
        if not isinstance(config, LogConfig):
            config = LogConfig.from_dict(config, "log")
        self.config = config
        self.schema = config.schema.schema
        self.joiner = joiner if joiner is not None else Joiner(config.join_config())
        self._keys = [KeyState(k) for k in config.keys]
        self._n_imp = len(config.owned)
        self._ready: list[Ready] = []
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._skipped = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._scored: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._fresh: collections.OrderedDict[int, tuple[Batch, np.ndarray]] = \
            collections.OrderedDict()
        self._server: LogServer | None = None
        self._positioned = False
        self._lag = {"entries": 0.0, "seconds": 0.0}
        self._uncommitted: dict[str, np.ndarray] | None = None
        self._outage = Outage(config)
        self._audit = Audit(Path(config.audit)) if config.audit else None

    # -- the stream contract ------------------------------------------------------------

    @property
    def features(self) -> FeatureSpec:
        """Every sparse column follows ``decimal``, as in the CSV source."""
        return FeatureSpec.text(self.schema)

    @property
    def skipped(self) -> int:
        """Malformed entries skipped by the latest ``batches`` iteration."""
        return self._skipped

    @property
    def counters(self) -> dict[str, int]:
        """Totals across resumes: ``entries`` consumed, ``malformed``, ``lost`` (trimmed
        before being read), ``outages`` of the server, ``claimed`` pending entries of
        other consumers; then the joiner's counters, prefixed ``join_``."""
        join = {f"join_{k}": int(v) for k, v in dict(self.joiner.counters).items()}
        return {**self._counters, **join}

    @property
    def outage_s(self) -> float:
        """Seconds the server has been unreachable so far; 0.0 while it answers."""
        return self._outage.seconds

    def lag(self) -> dict[str, float]:
        """``entries``: added to the owned keys but not yet fed to the joiner, as of the
        last read; ``seconds``: how long the oldest of them has waited (by its entry id,
        the server's clock; 0 when caught up)."""
        return dict(self._lag)

    def _layout(self) -> list[int]:
        """``[partitions, rank, world]``: which keys this stream reads."""
        return [self.config.partitions, self.config.rank, self.config.world]

    def position(self) -> dict[str, np.ndarray]:
        """The state after the last batch yielded (see :mod:`kraken.data._logposition`)."""
        with self._lock:
            self._apply_scored()
            state = position_state(self._keys, self._layout(), self._counters,
                                   self.joiner.state(), self._ready, self.schema)
        if self._audit is not None:
            state.update(self._audit.position())
        return state

    def seek(self, state: dict[str, np.ndarray]) -> None:
        """Continue right after ``state`` (a :meth:`position`), whatever the server says."""
        pos = read_position(state, len(self._keys), self._layout(), self.schema)
        with self._lock:
            for k, p, r in zip(self._keys, pos.ids, pos.reads, strict=True):
                k.pos, k.read = p, r
                k.reset()
            self._counters = pos.counters
            self.joiner.load_state(pos.join)
            self._ready = [pos.ready] if len(pos.ready.batch) else []
            self._scored.clear()
            self._positioned = True
        if self._audit is not None:
            self._audit.seek(state)

    def commit(self, state: dict[str, np.ndarray]) -> None:
        """``XACK`` every pending entry up to ``state``'s ids; while the server is
        unreachable the acknowledgement waits for the next commit or reconnection."""
        self._uncommitted = state
        try:
            self._ack()
        except DOWN as exc:
            LOGGER.warning("log: acknowledging the checkpointed entries failed (%s); "
                           "retried later", exc)
        if self._audit is not None:
            self._audit.commit(state)

    def scored(self, fresh: Batch, probability: np.ndarray) -> None:
        """Hand the impression-time predictions of ``fresh`` to the joiner (applied by
        the reading thread before its next join, or by ``position``)."""
        with self._lock:
            entry = self._fresh.pop(id(fresh), None)
        if entry is None or entry[0] is not fresh:
            raise InputError("scored: this batch is not a pending `fresh` of this stream")
        p = np.asarray(probability, dtype=np.float32)
        if p.shape != (len(fresh),):
            raise InputError(f"scored: expected float32[{len(fresh)}], got {list(p.shape)}")
        self._scored.append((entry[1], p))

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Joined samples in batches of up to ``batch_size``; empty batches while caught
        up (after each blocking read that timed out) or while the server is down.

        ``start`` is accepted for the :class:`Stream` signature and not used: a log
        stream continues from its position (:meth:`seek`); a batch's ``offset`` counts
        the entries consumed, across resumes."""
        check_batch_args(batch_size, start)
        self._skipped = self._reported = 0
        while True:  # connect and position the groups; empty batches while the server is down
            try:
                self._prepare()
                self._back_up()
                break
            except DOWN as exc:
                self._went_down(exc)
                yield dataclasses.replace(empty_batch(self.schema),
                                          offset=self._counters["entries"])
                time.sleep(self._outage.backoff())
        while True:
            while self._ready:
                batch = self._take_ready(batch_size)
                yield dataclasses.replace(batch, offset=self._counters["entries"])
            try:
                if self._outage.since is not None:
                    self._prepare()
                    self._back_up()
                delivered = self._read_round()
                fed = self._feed()
                if fed or delivered:
                    continue
                if not self._wait():
                    yield dataclasses.replace(empty_batch(self.schema),
                                              offset=self._counters["entries"])
            except DOWN as exc:
                self._went_down(exc)
                yield dataclasses.replace(empty_batch(self.schema),
                                          offset=self._counters["entries"])
                time.sleep(self._outage.backoff())

    # -- connection ---------------------------------------------------------------------

    def _log_server(self) -> LogServer:
        """The server's clients, made on first use (no connection until a command)."""
        if self._server is None:
            self._server = LogServer(self.config)
        return self._server

    def _went_down(self, exc: Exception) -> None:
        self._outage.down(exc)
        for k in self._keys:
            k.reset()

    def _back_up(self) -> None:
        if self._outage.up():
            self._counters["outages"] += 1
            if self._uncommitted is not None:
                self._ack()

    def _check_run(self, run_id: str) -> None:
        """A server that restarted between two reads (the connection came back at once)
        is an outage too: reported and counted, the pending acknowledgement retried."""
        if self._outage.restarted(run_id):
            self._counters["outages"] += 1
            if self._uncommitted is not None:
                self._ack()

    def _prepare(self) -> None:
        """Check the server, create the groups, put them at the position, claim."""
        server = self._log_server()
        server.check_version()
        server.create_groups([k.name for k in self._keys])
        if not self._positioned:
            self._start_position(server)
        with self._lock:
            for k in self._keys:
                k.reset()
        for k in self._keys:
            server.put_group(k.name, k.pos)
            self._counters["claimed"] += server.claim(k.name)

    def _start_position(self, server: LogServer) -> None:
        """A run without a checkpoint: the oldest kept entry, or after the newest."""
        for k in self._keys:
            if self.config.start.value == "latest":
                k.pos, k.read = server.latest(k.name)
            else:
                k.pos, k.read = (0, 0), 0
        self._positioned = True

    def _ack(self) -> None:
        state = self._uncommitted
        if state is None:
            return
        server = self._log_server()
        ids = np.asarray(state["log.id"], dtype=np.uint64).reshape(len(self._keys), 2)
        for k, (ms, seq) in zip(self._keys, ids, strict=True):
            server.ack(k.name, format_id(ms, seq))
        if self._uncommitted is state:
            self._uncommitted = None

    # -- reading ------------------------------------------------------------------------

    def _read_round(self) -> int:
        """One script call per key with buffer room, pipelined; returns entries delivered."""
        c = self.config
        wants = [(k, max(c.read_count - k.buffered, c.read_count if k.stuck else 0))
                 for k in self._keys]
        wants = [(k, n) for k, n in wants if n > 0]
        if not wants:
            return 0
        run_id, replies = self._log_server().read([(k.name, n, k.dpos) for k, n in wants])
        self._check_run(run_id)
        total = 0
        for (k, n), r in zip(wants, replies, strict=True):
            k.stuck = False
            total += k.deliver(r.length, r.added, r.first, r.last, r.block, n)
        self._update_lag()
        return total

    def _feed(self) -> int:
        """Feed every entry before the cutoff to the joiner; queue what it emits."""
        cut = cutoff(self._keys)
        taken = []
        for k in self._keys:
            blocks, lost = k.take(cut)
            self._counters["lost"] += lost
            taken.append(blocks)
        imp = [b for t in taken[: self._n_imp] for b in t]
        act = [b for t in taken[self._n_imp:] for b in t]
        n_imp, n_act = sum(map(len, imp)), sum(map(len, act))
        if not n_imp and not n_act:
            for k in self._keys:  # a millisecond fuller than a read: read on past it
                k.stuck = cut is not None and k.more and bool(k.chunks) \
                    and int(k.chunks[-1].ms[-1]) == cut
            return 0
        c = self.config
        self._counters["entries"] += n_imp + n_act
        impressions, bad_imp = parse_impressions(imp, c.schema, c.max_value_bytes)
        actions, bad_act = parse_actions(act, c.action_types, c.max_value_bytes)
        self._report(imp, bad_imp, "impression")
        self._report(act, bad_act, "action")
        imp_ms = entry_ids(_ids(imp)[impressions.index])[0]
        act_ms = entry_ids(_ids(act)[actions.index])[0]
        io = np.lexsort((impressions.ts, imp_ms))
        ao = np.lexsort((actions.ts, act_ms))
        rid, ts = impressions.rid[io], impressions.ts[io]
        fresh = take_rows(impressions.features, io)
        with self._lock:
            self._apply_scored()
            for kind, a, b in merge_runs(imp_ms[io], ts, act_ms[ao], actions.ts[ao]):
                if kind == 0:
                    self.joiner.add_impressions(rid[a:b], ts[a:b], fresh.slice(a, b))
                else:
                    sel = ao[a:b]
                    self.joiner.add_actions(actions.rid[sel], actions.ts[sel],
                                            actions.kind[sel])
            emitted = self.joiner.emit()
            ready = Ready(emitted if emitted is not None else empty_batch(self.schema),
                           self.joiner.emitted_rid.copy(), self.joiner.emitted_kind.copy())
            if len(rid):
                self._fresh[id(fresh)] = (fresh, rid)
                while len(self._fresh) > 1024:  # never scored: the trainer dropped them
                    self._fresh.popitem(last=False)
        if len(rid):
            ready = dataclasses.replace(ready, batch=dataclasses.replace(ready.batch,
                                                                         fresh=fresh))
        if len(ready.batch) or len(rid):
            self._ready.append(ready)
        self._update_lag()
        return n_imp + n_act

    def _take_ready(self, batch_size: int) -> Batch:
        head = self._ready[0]
        n = len(head.batch)
        if n <= batch_size:
            self._ready.pop(0)
            out = head
        else:
            b = head.batch
            out = Ready(dataclasses.replace(b.slice(0, batch_size), fresh=b.fresh),
                         head.rid[:batch_size], head.kind[:batch_size])
            self._ready[0] = Ready(b.slice(batch_size, n), head.rid[batch_size:],
                                    head.kind[batch_size:])
        if self._audit is not None and len(out.batch):
            self._audit.yielded(out.rid, out.kind)
        return out.batch

    def _wait(self) -> bool:
        """Caught up: block until any key has an entry past its delivered position, at
        most ``block_ms``; False when the wait timed out."""
        return self._log_server().wait([k.name for k in self._keys], [k.dpos for k in self._keys])

    def _apply_scored(self) -> None:
        while self._scored:
            rid, p = self._scored.popleft()
            self.joiner.scored(rid, p)

    def _update_lag(self) -> None:
        entries = sum(max(0, k.added - k.read) for k in self._keys)
        now_ms = time.time() * 1000.0
        oldest = [int(k.chunks[0].ms[0]) if k.chunks else k.newest_ms
                  for k in self._keys if k.added > k.read]
        seconds = max(0.0, (now_ms - min(oldest)) / 1000.0) if oldest else 0.0
        self._lag = {"entries": float(entries), "seconds": seconds}

    def _report(self, blocks: list[EntryBlock], bad: tuple[np.ndarray, list[str]],
                what: str) -> None:
        idx, reasons = bad
        if not idx.shape[0]:
            return
        self._counters["malformed"] += int(idx.shape[0])
        self._skipped += int(idx.shape[0])
        for i, reason in zip(idx, reasons, strict=True):
            self._reported += 1
            if self._reported <= REPORT_LIMIT:
                LOGGER.warning("log: skipped malformed %s entry %s: %s", what,
                               _ids(blocks)[int(i)], reason)
        if self._reported > REPORT_LIMIT:
            LOGGER.warning("log: %d malformed entries skipped in this run so far (the first "
                           "%d reported one by one)", self._skipped, REPORT_LIMIT)
