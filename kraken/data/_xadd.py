"""Many ``XADD`` in one round trip and one reply: a server-side script, packed by hand.

redis-py packs every argument of every command in Python (type checks, encoders) and
parses one reply per command, which caps a pipeline of stream entries near 3,000 entries
per second on one core. Here a group of entries becomes *one* ``EVALSHA`` of
:data:`SCRIPT`, whose arguments are packed straight into RESP bytes::

    KEYS  the P partition keys of one stream kind ({prefix}:impressions:0 .. P-1)
    ARGV  maxlen (0: none) | k | field name 1 .. k | then per entry: partition (1-based),
          value 1 .. k

The script runs ``XADD key [MAXLEN ~ maxlen] * name1 value1 ...`` per entry (ids from the
server's clock, as a plain ``XADD``) and returns the count. A group is atomic on the
server: it is written whole or not at all. After a server restart the script cache is
empty; ``NOSCRIPT`` loads it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["SCRIPT", "GroupWriter"]

SCRIPT = """
local maxlen = tonumber(ARGV[1])
local k = tonumber(ARGV[2])
local head = {}
local i = 3 + k
local n = 0
while i <= #ARGV do
  local cmd
  if maxlen > 0 then
    cmd = {'XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', ARGV[1], '*'}
  else
    cmd = {'XADD', KEYS[tonumber(ARGV[i])], '*'}
  end
  for j = 1, k do
    cmd[#cmd + 1] = ARGV[2 + j]
    cmd[#cmd + 1] = ARGV[i + j]
  end
  redis.call(unpack(cmd))
  i = i + k + 1
  n = n + 1
end
return n
"""


def _bulk(parts: Sequence[bytes]) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class GroupWriter:
    """Writes groups of stream entries through ``client`` (a ``redis.Redis``)."""

    def __init__(self, client: Any, maxlen: int | None) -> None:
        self.client = client
        self.maxlen = b"%d" % (maxlen or 0)
        self.sha: bytes | None = None

    def write(self, keys: Sequence[str], names: Sequence[str],
              partition: Sequence[int], columns: Sequence[Sequence[str]]) -> int:
        """One entry per element of ``partition`` (index into ``keys``), with field
        ``names[j]`` = ``columns[j][i]``; returns the count the server wrote."""
        import redis  # noqa: PLC0415 - the log extra

        n = len(partition)
        k = len(names)
        cols = [[v.encode() for v in col] for col in columns]
        rows = [str(p + 1).encode() for p in partition]
        argv = [self.maxlen, b"%d" % k, *(s.encode() for s in names)]
        flat: list[bytes] = []
        for i in range(n):
            flat.append(rows[i])
            flat.extend(c[i] for c in cols)
        body = (_bulk([b"%d" % len(keys), *(s.encode() for s in keys)]) + _bulk(argv)
                + _bulk(flat))
        count = 3 + len(keys) + len(argv) + len(flat)  # EVALSHA sha numkeys ...
        for attempt in range(2):
            if self.sha is None:
                sha = self.client.script_load(SCRIPT)
                self.sha = sha.encode() if isinstance(sha, str) else bytes(sha)
            packed = b"*%d\r\n$7\r\nEVALSHA\r\n" % count + _bulk([self.sha]) + body
            pool = self.client.connection_pool
            conn = pool.get_connection()
            try:
                conn.send_packed_command([packed])
                reply = conn.read_response()
            except redis.exceptions.NoScriptError:
                self.sha = None
                if attempt:
                    raise
                continue
            finally:
                pool.release(conn)
            return int(reply)
        return 0
