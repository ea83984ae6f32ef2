"""One key's reading state in the log source: what was delivered and not yet fed, and
how far the key has been fed (see :mod:`kraken.data.redislog`).

Per key, two positions: ``pos``/``read`` (the last entry id fed to the joiner and the
count of the key's entries up to it, trimmed ones included: what a position stores)
and ``dpos``/``dread`` (the same for the last entry delivered by the server, at or
after ``pos``). Between them the delivered entries wait in :class:`Chunk`\\ s, one per
read, until the merge feeds every entry of a millisecond before the cutoff.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.data._lines import LOGGER
from kraken.data._logentries import EntryBlock, entry_ids, format_id

__all__ = ["Chunk", "KeyState"]


@dataclasses.dataclass
class Chunk:
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

    def split(self, m: int) -> tuple[Chunk, Chunk]:
        n = len(self)
        return (Chunk(self.block.slice(0, m), self.ms[:m], self.seq[:m], self.counts[:m]),
                Chunk(self.block.slice(m, n), self.ms[m:], self.seq[m:], self.counts[m:]))


class KeyState:
    """One key's reading state (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pos = (0, 0)  # last id fed to the joiner
        self.read = 0  # entries up to pos, trimmed ones included
        self.reset()

    def reset(self) -> None:
        """Forget what was delivered and not fed (it will be delivered again)."""
        self.chunks: list[Chunk] = []
        self.dpos, self.dread = self.pos, self.read
        self.more = True  # the last read may have left entries behind
        self.stuck = False  # its whole buffer is one millisecond: read more though full
        self.lost_pending = 0  # trimmed entries met while nothing was delivered
        self.added = self.read  # entries ever added, as of the last read
        self.newest_ms = 0

    @property
    def buffered(self) -> int:
        return sum(len(c) for c in self.chunks)

    def deliver(self, length: int, added: int, first: str, last: str, block: EntryBlock,
                asked: int) -> int:
        """Buffer ``block``, read after asking for ``asked`` entries; count entries trimmed
        before it (the stream's ``length``, ``added`` entries ever, ``first``/``last``
        ids at the read). Returns the entries buffered."""
        lost = 0
        if length == 0 or not first:
            lost = added - self.dread
        else:
            fms, fseq = entry_ids([first])
            if (int(fms[0]), int(fseq[0])) > self.dpos:
                lost = added - self.dread - length
        lost = max(0, lost)
        self.added = added
        self.newest_ms = int(entry_ids([last])[0][0])
        n = len(block)
        self.more = n >= asked
        if n == 0:
            self.lost_pending += lost
            self.dread += lost
            return 0
        ms, seq = entry_ids(block.ids)
        counts = self.dread + lost + np.arange(1, n + 1, dtype=np.int64)
        self.chunks.append(Chunk(block, ms, seq, counts))
        self.dpos, self.dread = (int(ms[-1]), int(seq[-1])), int(counts[-1])
        return n

    def take(self, cut: int | None) -> tuple[list[EntryBlock], int]:
        """Pop the buffered entries before millisecond ``cut`` (None: all), as blocks, and
        move ``pos``/``read`` past them. Returns them and the count of entries trimmed
        before them (reported on the ``kraken.data`` logger when positive)."""
        out: list[EntryBlock] = []
        before, fed = self.read, 0
        lost = self.lost_pending
        self.lost_pending = 0
        while self.chunks:
            ch = self.chunks[0]
            m = len(ch) if cut is None else ch.before(cut)
            if m == 0:
                break
            head, rest = ch.split(m)
            out.append(head.block)
            fed += m
            self.pos, self.read = (int(head.ms[-1]), int(head.seq[-1])), int(head.counts[-1])
            if len(rest):
                self.chunks[0] = rest
                break
            self.chunks.pop(0)
        if fed:
            lost = self.read - before - fed
        else:
            self.read += lost
        if lost > 0:
            where = f"before {out[0].ids[0]}" if fed else f"after {format_id(*self.pos)}"
            LOGGER.warning("log: %s: gap of %d entries trimmed (MAXLEN) before they were "
                           "read, %s", self.name, lost, where)
        return out, max(0, lost)
