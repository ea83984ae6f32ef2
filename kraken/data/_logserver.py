"""The Redis side of the log source: every command :mod:`kraken.data.redislog` sends,
and the bookkeeping of outages.

:class:`LogServer` holds two clients (text replies, and raw ones for the read script)
with redis-py's own retries off, so a lost connection reaches the source, which reports
it (:class:`Outage`), yields empty batches while it lasts and puts the groups back at its
position once the server answers (a server restarted from its append-only file may
remember an older delivery). Nothing here keeps a position: the source passes the ids.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kraken.data._lines import LOGGER
from kraken.data._logentries import EntryBlock, entry_ids, format_id
from kraken.data.logconfig import LogConfig
from kraken.errors import DataError

__all__ = ["DOWN", "LogServer", "Outage", "ReadReply"]

DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a lost connection (or a server that stopped answering) raises."""
_CLAIM_COUNT = 10_000
_ACK_COUNT = 10_000
_MIN_SERVER = (7, 0)  # XINFO STREAM's entries-added


def _no_retry() -> Retry:
    """redis-py retries nothing by itself: a lost connection reaches the stream, which
    reports the outage and puts the groups back at its position once the server answers
    (a server restarted from its append-only file may remember an older delivery)."""
    return Retry(NoBackoff(), 0)


def _raw(response: Any, **_: Any) -> Any:
    return response


_READ = """
local moved = redis.pcall('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[4])
if type(moved) == 'table' and moved.err then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[4], 'MKSTREAM')
end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
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
        table.concat(counts, ','), run}
"""
"""One read of one key, atomic: put the group right after the entries this consumer
holds (ARGV[4]; creating the group if the server lost it), whatever the server
remembers; the stream's counters (length, entries ever added, first and last id);
``XREADGROUP ... >``, its entries flattened into one string with the lengths of the
elements, so the client parses a handful of values instead of every field of every
entry; and the server's run id, which changes when it restarts."""


@dataclasses.dataclass(frozen=True)
class ReadReply:
    """One read of one key: the stream's ``length``, ``added`` (entries ever added),
    ``first``/``last`` entry ids ("" for no first entry) at the moment of the read, and
    the entries delivered."""

    length: int
    added: int
    first: str
    last: str
    block: EntryBlock


class LogServer:
    """The log's server, for the source of ``config`` (connects on the first command)."""

    def __init__(self, config: LogConfig) -> None:
        c = self.config = config
        client = redis.Redis.from_url(
            c.url, protocol=2, decode_responses=True, socket_connect_timeout=2.0,
            socket_timeout=c.block_ms / 1000 + 5.0, retry=_no_retry())
        client.set_response_callback("XREAD", _raw)
        client.set_response_callback("XAUTOCLAIM", _raw)
        self.client = client
        raw = redis.Redis.from_url(
            c.url, protocol=2, decode_responses=False, socket_connect_timeout=2.0,
            socket_timeout=c.block_ms / 1000 + 5.0, retry=_no_retry())
        self._read_script = raw.register_script(_READ)
        self._raw_client = raw

    def check_version(self) -> None:
        """Raise :class:`DataError` if the server is older than 7.0."""
        info = self.client.info("server")
        version = tuple(int(x) for x in str(info["redis_version"]).split(".")[:2])
        if version < _MIN_SERVER:
            raise DataError(f"log: redis-server {'.'.join(map(str, version))} is too old; "
                            f"counting trimmed entries needs 7.0 or newer")

    def create_groups(self, names: list[str]) -> None:
        """Create the consumer group on every key (and the key) unless it exists."""
        for name in names:
            try:
                self.client.xgroup_create(name, self.config.group, id="0-0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def latest(self, name: str) -> tuple[tuple[int, int], int]:
        """``((ms, seq), added)``: the id of the newest entry ever added to ``name`` and
        the count of entries ever added (a position right after the newest)."""
        info = self.client.xinfo_stream(name)
        ms, seq = entry_ids([info["last-generated-id"]])
        return (int(ms[0]), int(seq[0])), int(info["entries-added"])

    def put_group(self, name: str, pos: tuple[int, int]) -> None:
        """Make the group of ``name`` deliver next the entry right after id ``pos``."""
        self.client.xgroup_setid(name, self.config.group, format_id(*pos))

    def claim(self, name: str) -> int:
        """Take over the pending entries of other consumers of ``name`` (a dead trainer's)
        and remove those consumers; returns how many entries they held."""
        r = self.client
        me, g = self.config.consumer, self.config.group
        others = [c for c in r.xpending(name, g)["consumers"] if c["name"] != me]
        if not others:
            return 0
        cursor, n = "0-0", 0
        while True:
            reply = r.execute_command("XAUTOCLAIM", name, g, me, 0, cursor, "COUNT",
                                      _CLAIM_COUNT, "JUSTID")
            cursor, n = reply[0], n + len(reply[1])
            if cursor == "0-0":
                break
        for c in others:
            r.xgroup_delconsumer(name, g, c["name"])
        mine = sum(int(c["pending"]) for c in others)
        LOGGER.warning("log: %s: claimed %d pending entries of consumer(s) %s", name, mine,
                       [c["name"] for c in others])
        return mine

    def ack(self, name: str, upto: str) -> None:
        """``XACK`` every pending entry of ``name`` up to id ``upto`` (any consumer's)."""
        r, g = self.client, self.config.group
        while True:
            pending = r.xpending_range(name, g, min="-", max=upto, count=_ACK_COUNT)
            if not pending:
                break
            r.xack(name, g, *[p["message_id"] for p in pending])
            if len(pending) < _ACK_COUNT:
                break

    def read(self, wants: list[tuple[str, int, tuple[int, int]]],
             ) -> tuple[str, list[ReadReply]]:
        """One script call per ``(key, count, delivered id)``, pipelined: the group put
        right after the delivered id, then up to ``count`` new entries. Returns the
        server's run id and a reply per key, in order."""
        c = self.config
        pipe = self._raw_client.pipeline(transaction=False)
        for name, n, dpos in wants:
            self._read_script(keys=[name], args=[c.group, c.consumer, n, format_id(*dpos)],
                              client=pipe)
        replies = pipe.execute()
        out = []
        for reply in replies:
            length, added, first, last, blob, lens, counts, _ = reply
            out.append(ReadReply(int(length), int(added), first.decode(), last.decode(),
                                 EntryBlock.from_reply(blob, lens, counts)))
        return replies[0][7].decode(), out

    def wait(self, names: list[str], after: list[tuple[int, int]]) -> bool:
        """Block until any key ``names[i]`` has an entry past id ``after[i]``, at most
        ``block_ms``; False when the wait timed out."""
        ids = [format_id(*p) for p in after]
        reply = self.client.execute_command("XREAD", "COUNT", 1, "BLOCK",
                                            self.config.block_ms, "STREAMS", *names, *ids)
        return bool(reply)


class Outage:
    """Whether the server at ``url`` answers: since when it has not (``since``,
    ``time.monotonic()`` seconds), the reconnection attempts so far, and the run id of
    the server last read from (a restart between two reads changes it)."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.since: float | None = None
        self.attempts = 0
        self.run_id = ""

    @property
    def seconds(self) -> float:
        """Seconds the server has been unreachable so far; 0.0 while it answers."""
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def down(self, exc: Exception) -> None:
        """A command failed with ``exc`` (one of :data:`DOWN`): reported once per outage."""
        if self.since is None:
            self.since = time.monotonic()
            self.attempts = 0
            LOGGER.warning("log: server %s unreachable (%s); reconnecting with backoff",
                           self.config.url, exc)
        self.attempts += 1
        self.run_id = ""  # this outage is counted when the server is back, not again

    def backoff(self) -> float:
        """Seconds to wait before the next attempt: ``backoff_s`` doubling per attempt,
        at most ``max_backoff_s``."""
        c = self.config
        return float(min(c.max_backoff_s, c.backoff_s * 2 ** max(0, self.attempts - 1)))

    def up(self) -> bool:
        """The server answered: True (and reported) if that ends an outage."""
        if self.since is None:
            return False
        down = time.monotonic() - self.since
        LOGGER.warning("log: server %s back after %.1f s of outage (%d attempts); "
                       "continuing from the last entries fed", self.config.url, down,
                       self.attempts)
        self.since = None
        return True

    def restarted(self, run_id: str) -> bool:
        """A read answered by server run ``run_id``: True (and reported) if the server
        restarted since the previous read (the connection came back at once)."""
        was, self.run_id = self.run_id, run_id
        if was and run_id != was:
            LOGGER.warning("log: server %s restarted between two reads (run id %s, was %s); "
                           "continuing from the last entries delivered", self.config.url,
                           run_id, was)
            return True
        return False
