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
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import redis

from kraken.data._assemble import check_batch_args
from kraken.data._batchstate import (
    batch_from_state,
    batch_state,
    concat_batches,
    empty_batch,
    take_rows,
)
from kraken.data._lines import LOGGER
from kraken.data._logentries import (
    EntryBlock,
    entry_ids,
    format_id,
    parse_actions,
    parse_impressions,
)
from kraken.data.base import Batch
from kraken.data.features import FeatureSpec
from kraken.data.join import Joiner
from kraken.data.logconfig import LogConfig
from kraken.errors import ConfigError, DataError, InputError

__all__ = ["RedisLogStream"]

REPORT_LIMIT = 100  # malformed entries reported one by one per iteration, then summaries
_CLAIM_COUNT = 10_000
_ACK_COUNT = 10_000
_MIN_SERVER = (7, 0)  # XINFO STREAM's entries-added
_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_COUNTERS = ("entries", "malformed", "lost", "outages", "claimed")


def _raw(response: Any, **_: Any) -> Any:
    return response


def _ids(blocks: list[EntryBlock]) -> np.ndarray:
    """``object[n]``: the entry ids of ``blocks`` end to end."""
    return np.concatenate([np.zeros(0, dtype=object)] + [b.ids for b in blocks])


@dataclasses.dataclass
class _Chunk:
    """Entries delivered by one read of one key, not yet fed: ``ms``/``seq`` their ids,
    ``counts[i]`` the key's entry count through entry ``i`` (trimmed ones included)."""

    block: EntryBlock
    ms: np.ndarray
    seq: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.block)

    def before(self, ms: int) -> int:
        """How many leading entries have ids of milliseconds before ``ms``."""
        return int((self.ms < ms).sum())  # ids increase, so the True ones lead

    def split(self, m: int) -> tuple[_Chunk, _Chunk]:
        n = len(self)
        return (_Chunk(self.block.slice(0, m), self.ms[:m], self.seq[:m], self.counts[:m]),
                _Chunk(self.block.slice(m, n), self.ms[m:], self.seq[m:], self.counts[m:]))


_READ = """
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added, first, last = 0, 0, '', '0-0'
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'length' then length = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1]
  elseif k == 'last-generated-id' then last = info[i + 1]
  elseif k == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '>')
local parts, lens, counts, np, nc = {}, {}, {}, 0, 0
if r then
  local entries = r[1][2]
  for j = 1, #entries do
    local e = entries[j]
    local f = e[2]
    local m = #f
    np = np + 1
    parts[np] = e[1]
    lens[np] = #e[1]
    nc = nc + 1
    counts[nc] = m
    for i = 1, m do
      local x = f[i]
      np = np + 1
      parts[np] = x
      lens[np] = #x
    end
  end
end
return {length, added, first, last, table.concat(parts), table.concat(lens, ','),
        table.concat(counts, ',')}
"""
"""One read of one key, atomic: the stream's counters (length, entries ever added, first
and last id) and ``XREADGROUP ... >``, its entries flattened into one string with the
lengths of the elements, so the client parses a handful of values instead of every
field of every entry."""


@dataclasses.dataclass(frozen=True)
class _Ready:
    """Samples decided, not yet yielded: the batch and each sample's request id and
    :class:`~kraken.data.join.SampleKind`."""

    batch: Batch
    rid: np.ndarray
    kind: np.ndarray


def _runs(imp_ms: np.ndarray, imp_ts: np.ndarray, act_ms: np.ndarray, act_ts: np.ndarray,
          ) -> list[tuple[int, int, int]]:
    """Impressions and actions (each sorted by arrival millisecond, then event time) in
    one order, as runs ``(kind, start, stop)``: kind 0 slices the impressions, kind 1
    the actions. Within a millisecond, whose order across keys is unknown, event time
    decides, impressions first on a tie."""
    kinds = np.concatenate([np.zeros(imp_ms.shape[0], np.int8),
                            np.ones(act_ms.shape[0], np.int8)])
    order = np.lexsort((kinds, np.concatenate([imp_ts, act_ts]),
                        np.concatenate([imp_ms, act_ms])))
    k = kinds[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(k)) + 1, [k.shape[0]]])
    runs, seen = [], [0, 0]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        kind = int(k[a])
        runs.append((kind, seen[kind], seen[kind] + int(b - a)))
        seen[kind] += int(b - a)
    return runs


class _Key:
    """One key's reading state (see :class:`RedisLogStream`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pos = (0, 0)  # last id fed to the joiner
        self.read = 0  # entries up to pos, trimmed ones included
        self.reset()

    def reset(self) -> None:
        """Forget what was delivered and not fed (it will be delivered again)."""
        self.chunks: list[_Chunk] = []
        self.dpos, self.dread = self.pos, self.read
        self.more = True  # the last read may have left entries behind
        self.stuck = False  # its whole buffer is one millisecond: read more though full
        self.lost_pending = 0  # trimmed entries met while nothing was delivered
        self.added = self.read  # entries ever added, as of the last read
        self.newest_ms = 0

    @property
    def buffered(self) -> int:
        return sum(len(c) for c in self.chunks)


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
        self._keys = [_Key(k) for k in config.keys]
        self._n_imp = len(config.owned)
        self._ready: list[_Ready] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._skipped = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._scored: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._fresh: collections.OrderedDict[int, tuple[Batch, np.ndarray]] = \
            collections.OrderedDict()
        self._client: redis.Redis | None = None
        self._raw_client: redis.Redis | None = None
        self._read_script: Any = None
        self._positioned = False
        self._lag = {"entries": 0.0, "seconds": 0.0}
        self._uncommitted: dict[str, np.ndarray] | None = None
        self._outage_since: float | None = None
        self._attempts = 0
        self._audit = _Audit(Path(config.audit)) if config.audit else None

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
        since = self._outage_since
        return 0.0 if since is None else time.monotonic() - since

    def lag(self) -> dict[str, float]:
        """``entries``: added to the owned keys but not yet fed to the joiner, as of the
        last read; ``seconds``: how long the oldest of them has waited (by its entry id,
        the server's clock; 0 when caught up)."""
        return dict(self._lag)

    def position(self) -> dict[str, np.ndarray]:
        """The state after the last batch yielded (see the module docstring)."""
        with self._lock:
            self._apply_scored()
            state = {"log.id": np.array([k.pos for k in self._keys], dtype=np.uint64),
                     "log.read": np.array([k.read for k in self._keys], dtype=np.int64),
                     "log.layout": np.array([self.config.partitions, self.config.rank,
                                             self.config.world], dtype=np.int64),
                     "log.counters": np.array([self._counters[c] for c in _COUNTERS],
                                              dtype=np.int64)}
            state.update({f"join.{k}": v for k, v in self.joiner.state().items()})
            state.update(batch_state("ready", concat_batches([r.batch for r in self._ready],
                                                             self.schema)))
            state["ready.rid"] = np.concatenate([np.zeros(0, np.uint64)]
                                                + [r.rid for r in self._ready])
            state["ready.kind"] = np.concatenate([np.zeros(0, np.int8)]
                                                 + [r.kind for r in self._ready])
        if self._audit is not None:
            state.update(self._audit.position())
        return state

    def seek(self, state: dict[str, np.ndarray]) -> None:
        """Continue right after ``state`` (a :meth:`position`), whatever the server says."""
        mine = [self.config.partitions, self.config.rank, self.config.world]
        layout = [int(x) for x in state.get("log.layout", [])]
        if layout != mine:
            raise ConfigError(f"log.partitions: the position was taken with (partitions, "
                              f"rank, world) = {tuple(layout)}, this stream reads "
                              f"{tuple(mine)}")
        try:
            ids = np.asarray(state["log.id"], dtype=np.uint64).reshape(len(self._keys), 2)
            reads = np.asarray(state["log.read"], dtype=np.int64).reshape(len(self._keys))
            counters = [int(x) for x in state["log.counters"]]
            join = {k[5:]: v for k, v in state.items() if k.startswith("join.")}
            ready = _Ready(batch_from_state("ready", state, self.schema),
                           np.asarray(state["ready.rid"], np.uint64),
                           np.asarray(state["ready.kind"], np.int8))
        except (KeyError, ValueError) as exc:
            raise InputError(f"not a position of this log stream: {exc}") from None
        with self._lock:
            for k, (ms, seq), r in zip(self._keys, ids, reads, strict=True):
                k.pos, k.read = (int(ms), int(seq)), int(r)
                k.reset()
            self._counters = {**dict.fromkeys(_COUNTERS, 0),
                              **dict(zip(_COUNTERS, counters, strict=False))}
            self.joiner.load_state(join)
            self._ready = [ready] if len(ready.batch) else []
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
        except _DOWN as exc:
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
            except _DOWN as exc:
                self._went_down(exc)
                yield dataclasses.replace(empty_batch(self.schema),
                                          offset=self._counters["entries"])
                time.sleep(self._backoff())
        while True:
            while self._ready:
                batch = self._take_ready(batch_size)
                yield dataclasses.replace(batch, offset=self._counters["entries"])
            try:
                if self._outage_since is not None:
                    self._prepare()
                    self._back_up()
                delivered = self._read_round()
                fed = self._feed()
                if fed or delivered:
                    continue
                if not self._wait():
                    yield dataclasses.replace(empty_batch(self.schema),
                                              offset=self._counters["entries"])
            except _DOWN as exc:
                self._went_down(exc)
                yield dataclasses.replace(empty_batch(self.schema),
                                          offset=self._counters["entries"])
                time.sleep(self._backoff())

    # -- connection ---------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self._client is None:
            c = self.config
            client = redis.Redis.from_url(
                c.url, protocol=2, decode_responses=True, socket_connect_timeout=2.0,
                socket_timeout=c.block_ms / 1000 + 5.0, retry_on_timeout=False)
            client.set_response_callback("XREAD", _raw)
            client.set_response_callback("XAUTOCLAIM", _raw)
            self._client = client
            raw = redis.Redis.from_url(
                c.url, protocol=2, decode_responses=False, socket_connect_timeout=2.0,
                socket_timeout=c.block_ms / 1000 + 5.0, retry_on_timeout=False)
            self._read_script = raw.register_script(_READ)
            self._raw_client = raw
        return self._client

    def _went_down(self, exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._attempts = 0
            LOGGER.warning("log: server %s unreachable (%s); reconnecting with backoff",
                           self.config.url, exc)
        self._attempts += 1
        for k in self._keys:
            k.reset()

    def _backoff(self) -> float:
        c = self.config
        return float(min(c.max_backoff_s, c.backoff_s * 2 ** max(0, self._attempts - 1)))

    def _back_up(self) -> None:
        if self._outage_since is None:
            return
        down = time.monotonic() - self._outage_since
        self._counters["outages"] += 1
        LOGGER.warning("log: server %s back after %.1f s of outage (%d attempts); "
                       "continuing from the last entries fed", self.config.url, down,
                       self._attempts)
        self._outage_since = None
        if self._uncommitted is not None:
            self._ack()

    def _prepare(self) -> None:
        """Check the server, create the groups, put them at the position, claim."""
        r = self._redis()
        version = tuple(int(x) for x in str(r.info("server")["redis_version"]).split(".")[:2])
        if version < _MIN_SERVER:
            raise DataError(f"log: redis-server {'.'.join(map(str, version))} is too old; "
                            f"counting trimmed entries needs 7.0 or newer")
        g = self.config.group
        for k in self._keys:
            try:
                r.xgroup_create(k.name, g, id="0-0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if not self._positioned:
            self._start_position(r)
        with self._lock:
            for k in self._keys:
                k.reset()
        for k in self._keys:
            r.xgroup_setid(k.name, g, format_id(*k.pos))
            self._claim(r, k)

    def _start_position(self, r: redis.Redis) -> None:
        """A run without a checkpoint: the oldest kept entry, or after the newest."""
        for k in self._keys:
            if self.config.start.value == "latest":
                info = r.xinfo_stream(k.name)
                ms, seq = entry_ids([info["last-generated-id"]])
                k.pos, k.read = (int(ms[0]), int(seq[0])), int(info["entries-added"])
            else:
                k.pos, k.read = (0, 0), 0
        self._positioned = True

    def _claim(self, r: redis.Redis, k: _Key) -> None:
        """Take over the pending entries of other consumers of ``k`` (a dead trainer's)."""
        me, g = self.config.consumer, self.config.group
        others = [c for c in r.xpending(k.name, g)["consumers"] if c["name"] != me]
        if not others:
            return
        cursor, n = "0-0", 0
        while True:
            reply = r.execute_command("XAUTOCLAIM", k.name, g, me, 0, cursor, "COUNT",
                                      _CLAIM_COUNT, "JUSTID")
            cursor, n = reply[0], n + len(reply[1])
            if cursor == "0-0":
                break
        for c in others:
            r.xgroup_delconsumer(k.name, g, c["name"])
        mine = sum(int(c["pending"]) for c in others)
        self._counters["claimed"] += mine
        LOGGER.warning("log: %s: claimed %d pending entries of consumer(s) %s", k.name, mine,
                       [c["name"] for c in others])

    def _ack(self) -> None:
        state = self._uncommitted
        if state is None:
            return
        r, g = self._redis(), self.config.group
        ids = np.asarray(state["log.id"], dtype=np.uint64).reshape(len(self._keys), 2)
        for k, (ms, seq) in zip(self._keys, ids, strict=True):
            upto = format_id(ms, seq)
            while True:
                pending = r.xpending_range(k.name, g, min="-", max=upto, count=_ACK_COUNT)
                if not pending:
                    break
                r.xack(k.name, g, *[p["message_id"] for p in pending])
                if len(pending) < _ACK_COUNT:
                    break
        if self._uncommitted is state:
            self._uncommitted = None

    # -- reading ------------------------------------------------------------------------

    def _read_round(self) -> int:
        """One script call per key with buffer room, pipelined; returns entries delivered."""
        c = self.config
        want = {k.name: max(c.read_count - k.buffered, c.read_count if k.stuck else 0)
                for k in self._keys}
        want = {name: n for name, n in want.items() if n > 0}
        if not want:
            return 0
        self._redis()
        pipe = self._raw_client.pipeline(transaction=False)
        for name, n in want.items():
            self._read_script(keys=[name], args=[c.group, c.consumer, n], client=pipe)
        replies = pipe.execute()
        total = 0
        keys = {k.name: k for k in self._keys}
        for (name, n), reply in zip(want.items(), replies, strict=True):
            length, added, first, last, blob, lens, counts = reply
            keys[name].stuck = False
            total += self._deliver(keys[name], int(length), int(added), first.decode(),
                                   last.decode(), EntryBlock.from_reply(blob, lens, counts), n)
        self._update_lag()
        return total

    def _deliver(self, k: _Key, length: int, added: int, first: str, last: str,
                 block: EntryBlock, asked: int) -> int:
        """Buffer ``block`` read from ``k``; count entries trimmed before it (the stream's
        ``length``, ``added`` entries ever, ``first``/``last`` ids at the read)."""
        lost = 0
        if length == 0 or not first:
            lost = added - k.dread
        else:
            fms, fseq = entry_ids([first])
            if (int(fms[0]), int(fseq[0])) > k.dpos:
                lost = added - k.dread - length
        lost = max(0, lost)
        k.added = added
        k.newest_ms = int(entry_ids([last])[0][0])
        n = len(block)
        k.more = n >= asked
        if n == 0:
            k.lost_pending += lost
            k.dread += lost
            return 0
        ms, seq = entry_ids(block.ids)
        counts = k.dread + lost + np.arange(1, n + 1, dtype=np.int64)
        k.chunks.append(_Chunk(block, ms, seq, counts))
        k.dpos, k.dread = (int(ms[-1]), int(seq[-1])), int(counts[-1])
        return n

    def _cutoff(self) -> int | None:
        """Entries of milliseconds before this one may be fed: no key that may hold more
        can still deliver an entry of an earlier millisecond (None: no limit). Ids order
        entries across keys only by their millisecond: within one, the order is unknown."""
        limits = [int(k.chunks[-1].ms[-1]) for k in self._keys if k.more and k.chunks]
        return min(limits) if limits else None

    def _take(self, k: _Key, cut: int | None) -> list[EntryBlock]:
        """Pop ``k``'s buffered entries before millisecond ``cut``, as blocks; report the
        entries trimmed before them."""
        out: list[EntryBlock] = []
        before, fed = k.read, 0
        lost = k.lost_pending
        k.lost_pending = 0
        while k.chunks:
            ch = k.chunks[0]
            m = len(ch) if cut is None else ch.before(cut)
            if m == 0:
                break
            head, rest = ch.split(m)
            out.append(head.block)
            fed += m
            k.pos, k.read = (int(head.ms[-1]), int(head.seq[-1])), int(head.counts[-1])
            if len(rest):
                k.chunks[0] = rest
                break
            k.chunks.pop(0)
        if fed:
            lost = k.read - before - fed
        else:
            k.read += lost
        if lost > 0:
            where = f"before {out[0].ids[0]}" if fed else f"after {format_id(*k.pos)}"
            LOGGER.warning("log: %s: gap of %d entries trimmed (MAXLEN) before they were "
                           "read, %s", k.name, lost, where)
            self._counters["lost"] += lost
        return out

    def _feed(self) -> int:
        """Feed every entry before the cutoff to the joiner; queue what it emits."""
        cut = self._cutoff()
        taken = [self._take(k, cut) for k in self._keys]
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
            for kind, a, b in _runs(imp_ms[io], ts, act_ms[ao], actions.ts[ao]):
                if kind == 0:
                    self.joiner.add_impressions(rid[a:b], ts[a:b], fresh.slice(a, b))
                else:
                    sel = ao[a:b]
                    self.joiner.add_actions(actions.rid[sel], actions.ts[sel],
                                            actions.kind[sel])
            emitted = self.joiner.emit()
            ready = _Ready(emitted if emitted is not None else empty_batch(self.schema),
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
            out = _Ready(dataclasses.replace(b.slice(0, batch_size), fresh=b.fresh),
                         head.rid[:batch_size], head.kind[:batch_size])
            self._ready[0] = _Ready(b.slice(batch_size, n), head.rid[batch_size:],
                                    head.kind[batch_size:])
        if self._audit is not None and len(out.batch):
            self._audit.yielded(out)
        return out.batch

    def _wait(self) -> bool:
        """Caught up: block until any key has an entry past its delivered position, at
        most ``block_ms``; False when the wait timed out."""
        keys = [k.name for k in self._keys]
        ids = [format_id(*k.dpos) for k in self._keys]
        reply = self._redis().execute_command("XREAD", "COUNT", 1, "BLOCK",
                                              self.config.block_ms, "STREAMS", *keys, *ids)
        return bool(reply)

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


class _Audit:
    """A crash drill's evidence, one file per process under ``directory``:

    ``Y <rid>:<kind> ...`` request id and SampleKind (0 negative, 1 positive, 2 correction)
                           of every sample of a batch, when yielded (it may not be
                           trained yet)
    ``P <token> <n> <t>``  position ``n`` of this process was handed out (every batch
                           yielded before it was trained: the trainer drains first)
    ``S <token> <n> <t>``  this process resumed from position ``n`` of process ``token``
    ``C <token> <n> <t>``  position ``n`` was committed

    (``<t>``: unix time of the line).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.file = (directory / f"{self.token}.log").open("a", buffering=1)
        self.n = 0

    def yielded(self, ready: _Ready) -> None:
        self.file.write("Y " + " ".join(f"{int(r)}:{int(k)}" for r, k in
                                         zip(ready.rid, ready.kind, strict=True)) + "\n")

    def position(self) -> dict[str, np.ndarray]:
        self.n += 1
        self.file.write(f"P {self.token} {self.n} {time.time():.3f}\n")
        return {"audit.token": np.frombuffer(self.token.encode(), dtype=np.uint8).copy(),
                "audit.n": np.array([self.n], dtype=np.int64)}

    def _tag(self, state: dict[str, np.ndarray]) -> str:
        if "audit.token" not in state:
            return "- 0"
        return f"{bytes(state['audit.token']).decode()} {int(state['audit.n'][0])}"

    def seek(self, state: dict[str, np.ndarray]) -> None:
        self.file.write(f"S {self._tag(state)} {time.time():.3f}\n")

    def commit(self, state: dict[str, np.ndarray]) -> None:
        self.file.write(f"C {self._tag(state)} {time.time():.3f}\n")
