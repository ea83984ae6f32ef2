"""The order in which the log source feeds entries of different keys to the joiner.

Entry ids order the entries of one key; across keys they order entries only by
millisecond. So the source feeds, from every key, only the entries of milliseconds
before the :func:`cutoff` (no key can still deliver an earlier one), and within those,
impressions and actions in one order (:func:`merge_runs`): millisecond, then event
time, impressions first on a tie. An action thus never overtakes its impression
because one stream was read further than the other.
"""

from __future__ import annotations

import numpy as np

from kraken.data._logkeys import KeyState

__all__ = ["cutoff", "merge_runs"]


def cutoff(keys: list[KeyState]) -> int | None:
    """Entries of milliseconds before this one may be fed: no key that may hold more can
    still deliver an entry of an earlier millisecond (None: no limit). Ids order entries
    across keys only by their millisecond: within one, the order is unknown."""
    limits = [int(k.chunks[-1].ms[-1]) for k in keys if k.more and k.chunks]
    return min(limits) if limits else None


def merge_runs(imp_ms: np.ndarray, imp_ts: np.ndarray, act_ms: np.ndarray,
               act_ts: np.ndarray) -> list[tuple[int, int, int]]:
    """Impressions and actions (each sorted by arrival millisecond, then event time) in
    one order, as runs ``(kind, start, stop)``: kind 0 slices the impressions, kind 1
    the actions. Within a millisecond, whose order across keys is unknown, event time
    decides, impressions first on a tie. No entries (a read of malformed ones only): no
    runs."""
    if not imp_ms.shape[0] and not act_ms.shape[0]:
        return []
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
