"""The online sample join: impressions wait an event-time window for their actions.

Impressions (request id ``rid``, event time ``ts``, features) and actions (``rid``,
``ts``, action type) arrive on two streams, in batches, in any interleaving. Event time
drives everything: the *watermark* is the newest ``ts`` seen on either stream (or
passed to :meth:`Joiner.advance`). The life of an impression::

      add_impressions                label action, ts < imp.ts + W
    ------------------> PENDING ------------------------------------> POSITIVE (emitted 1)
                           |                                              ^
                           | imp.ts + W <= watermark                      | label action
                           v                                              | (a correction)
                        NEGATIVE (emitted 0) -----------------------------+
                           |
                           | imp.ts + W + C <= watermark, or over max_recent
                           v
                        forgotten (a later action for it is an orphan)

with ``W = window_s`` and ``C = correction_s``. POSITIVE rows are remembered as long as
NEGATIVE ones, so a second label action is a counted duplicate rather than an orphan.
Over ``max_pending`` pending impressions, the oldest (in arrival order) are dropped
unlabelled, and counted. Actions for unknown request ids are counted and dropped;
actions of a type that is not a label action are counted (``other_actions``) and change
nothing. An impression whose ``rid`` is already known is a counted duplicate, dropped.

One call, in order: ``add_impressions`` adds the new rows, then advances the watermark,
expires, enforces the budget and forgets; ``add_actions`` looks every action's rid up
first (so orphans are judged against the state before the call), emits the positives of
in-window label actions on pending rows, advances the watermark and expires, then turns
the remaining label actions into corrections (rows now NEGATIVE, one each) or duplicates,
and forgets. Decided samples wait in an outbox until :meth:`Joiner.emit`, in decision
order (within one ``add_actions``: positives, negatives, corrections).

Emitted samples carry ``prior``: the probability given to :meth:`Joiner.scored` for their
rid while the joiner held it (NaN where none was given), so progressive evaluation
scores the prediction made when the impression was first seen. With ``wait_for_score``
a label action on an impression not yet scored makes it CLICKED: its positive is emitted
when the score comes (or, unscored, when its window ends), so no sample falls back to
another model's prediction. A correction carries its
impression's prior too: the earlier negative was the joiner's mistake, not the model's.

Everything is vectorized over batches (numpy, and the numba hash index of
:mod:`kraken.table.index` for rid lookups); nothing loops per key in Python. The state
(:meth:`Joiner.state`) is a dict of plain numeric arrays; loading it into a joiner of the
same config gives exactly the outputs the original would have given.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kraken.config import check_int
from kraken.data._rows import Rows, RowStore
from kraken.data.base import Batch, Jagged
from kraken.errors import CheckpointMismatchError, ConfigError, DTypeError, InputError, ShapeError
from kraken.table.index import HashIndex

__all__ = ["COUNTERS", "JoinConfig", "Joiner", "SampleKind"]

PENDING, NEGATIVE, POSITIVE, CLICKED = 0, 1, 2, 3
"""Row states of the store (``FREE`` = forgotten); CLICKED: labelled, waiting for its
impression-time score (``wait_for_score``)."""

_NO_TIME = np.iinfo(np.int64).min
STATE_VERSION = 1

COUNTERS = ("impressions", "actions", "positives", "negatives", "corrections",
            "orphan_actions", "duplicate_impressions", "duplicate_actions", "other_actions",
            "dropped_over_budget", "forgotten", "scored")
"""Monotone event counters (``counters`` adds the gauges ``pending`` and ``recent``)."""


class SampleKind:
    """Codes of :attr:`Joiner.emitted_kind`."""

    NEGATIVE = 0
    POSITIVE = 1
    CORRECTION = 2


@dataclasses.dataclass(frozen=True)
class JoinConfig:
    """How impressions and actions are joined (times in event-time seconds).

    ``window_s``: how long an impression waits for a label action before it is emitted
    as a negative. ``max_pending``: budget of impressions waiting (oldest out first).
    ``label_actions``: action types that make a sample positive, a subset of
    ``action_types`` (every known type; an action's ``kind`` indexes this tuple).
    ``correction_s``: how long after its window an impression is remembered, so that a
    late label action still produces a correction (default ``window_s``).
    ``max_recent``: budget of remembered decided impressions (default ``max_pending``).
    ``wait_for_score``: a positive whose impression has not been scored yet
    (:meth:`Joiner.scored`) waits for its score, or for its window's end, before it is
    emitted, so that every sample carries the prediction made when its impression was
    first seen (else a click read with its impression would be scored by the training
    forward instead, and progressive AUC would mix two models). A trainer scores every
    impression a batch after reading it, so the wait is one batch.
    """

    window_s: int = 300
    max_pending: int = 1_000_000
    label_actions: tuple[str, ...] = ("click",)
    action_types: tuple[str, ...] = ("click",)
    correction_s: int | None = None
    max_recent: int | None = None
    wait_for_score: bool = False

    def __post_init__(self) -> None:
        check_int("window_s", self.window_s, lo=1)
        check_int("max_pending", self.max_pending, lo=1)
        for name in ("label_actions", "action_types"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name}: expected a list of non-empty strings, got {value!r}")
            if len(set(value)) != len(value):
                raise ConfigError(f"{name}: repeated types in {list(value)}")
            object.__setattr__(self, name, tuple(value))
        if not self.action_types or len(self.action_types) > 127:
            raise ConfigError(f"action_types: expected 1 to 127 types, "
                              f"got {len(self.action_types)}")
        if not self.label_actions:
            raise ConfigError("label_actions: at least one type is needed")
        unknown = sorted(set(self.label_actions) - set(self.action_types))
        if unknown:
            raise ConfigError(f"label_actions: {unknown} not in action_types "
                              f"{list(self.action_types)}")
        if self.correction_s is None:
            object.__setattr__(self, "correction_s", self.window_s)
        check_int("correction_s", self.correction_s, lo=0)
        if self.max_recent is None:
            object.__setattr__(self, "max_recent", self.max_pending)
        check_int("max_recent", self.max_recent, lo=0)


def _vec(name: str, a: object, dtype: type) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"{name}: expected a numpy {np.dtype(dtype).name} array, "
                         f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise DTypeError(f"{name}: expected {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != 1:
        raise ShapeError(f"{name}: expected 1-d, got shape {list(a.shape)}")
    return a


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: int(v.shape[0]) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ShapeError(f"lengths differ: {lengths}")
    return next(iter(lengths.values()))


def _first_unique(a: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct value of ``a``, ascending."""
    _, first = np.unique(a, return_index=True)
    first.sort()
    return first


class Joiner:
    """Joins impressions with their delayed actions into labelled samples.

    See the module docstring for the semantics. Inputs: ``rid uint64``, ``ts int64``
    (unix seconds), ``kind int8`` (index into ``config.action_types``), features as a
    :class:`Batch` whose rows align with ``rid`` (its label and event time are ignored).
    The feature layout (fields, dense width, multi-valued fields) is fixed by the first
    batch of impressions. Not thread safe.
    """

    def __init__(self, config: JoinConfig | None = None) -> None:
        self.config = config or JoinConfig()
        self._is_label = np.zeros(len(self.config.action_types), dtype=bool)
        self._is_label[[self.config.action_types.index(t)
                        for t in self.config.label_actions]] = True
        self._reset()

    def _reset(self) -> None:
        self._store: RowStore | None = None
        self._index = HashIndex()
        self._watermark = int(_NO_TIME)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._pending = 0
        self._min_pending_ts = int(_NO_TIME)  # lower bounds: a scan is skipped above them
        self._min_recent_ts = int(_NO_TIME)
        self._out: list[tuple[Rows, np.ndarray]] = []
        self._emitted_rid = np.empty(0, np.uint64)
        self._emitted_kind = np.empty(0, np.int8)

    # ------------------------------------------------------------------ questions

    @property
    def watermark(self) -> int | None:
        """Newest event time seen (unix seconds), None before any."""
        return None if self._watermark == _NO_TIME else self._watermark

    @property
    def counters(self) -> dict[str, int]:
        """Event counts since the start (see ``COUNTERS``), plus the gauges ``pending``
        (impressions waiting) and ``recent`` (decided impressions remembered)."""
        live = self._store.live if self._store is not None else 0
        return {**self._counts, "pending": self._pending, "recent": live - self._pending}

    @property
    def emitted_rid(self) -> np.ndarray:
        """``uint64[B]``: request ids of the samples returned by the latest :meth:`emit`."""
        return self._emitted_rid

    @property
    def emitted_kind(self) -> np.ndarray:
        """``int8[B]``: :class:`SampleKind` of each sample of the latest :meth:`emit`."""
        return self._emitted_kind

    @property
    def nbytes(self) -> int:
        """Bytes held for pending and remembered impressions (store and index)."""
        return (self._store.nbytes if self._store is not None else 0) + self._index.nbytes

    # ------------------------------------------------------------------ verbs

    def add_impressions(self, rid: np.ndarray, ts: np.ndarray, features: Batch) -> None:
        """Hold impressions ``rid uint64[N]`` shown at ``ts int64[N]`` with ``features``
        (a Batch of N rows); then advance the watermark to ``max(ts)`` and settle."""
        n = _same_length(rid=_vec("rid", rid, np.uint64), ts=_vec("ts", ts, np.int64))
        rows = self._rows_of(rid, ts, features, n)
        if n == 0:
            return
        store = self._need_store()
        self._counts["impressions"] += n
        first = _first_unique(rid)
        known = self._index.find(rid[first].view(np.int64)) >= 0
        new = first[~known]
        self._counts["duplicate_impressions"] += n - int(new.shape[0])
        if new.shape[0]:
            pos = store.append(rows.take(new), PENDING)
            self._index.insert(rid[new].view(np.int64), pos)
            self._pending += int(new.shape[0])
            self._min_pending_ts = min(self._min_pending_ts, int(ts[new].min()))
        self._settle(int(ts.max()))

    def add_actions(self, rid: np.ndarray, ts: np.ndarray, kind: np.ndarray) -> None:
        """Attach actions ``rid uint64[M]`` at ``ts int64[M]`` of type ``kind int8[M]``
        (index into ``config.action_types``); then advance the watermark to ``max(ts)``."""
        m = _same_length(rid=_vec("rid", rid, np.uint64), ts=_vec("ts", ts, np.int64),
                         kind=_vec("kind", kind, np.int8))
        if m == 0:
            return
        n_types = self._is_label.shape[0]
        bad = (kind < 0) | (kind >= n_types)
        if bad.any():
            raise InputError(f"kind: {int(bad.sum())} values outside [0, {n_types}), "
                             f"e.g. {int(kind[bad][0])}; action_types are "
                             f"{list(self.config.action_types)}")
        self._counts["actions"] += m
        pos = self._index.find(rid.view(np.int64))
        known = pos >= 0
        label = self._is_label[kind]
        self._counts["orphan_actions"] += m - int(known.sum())
        self._counts["other_actions"] += int((known & ~label).sum())
        act = np.flatnonzero(known & label)
        if act.shape[0] == 0:
            self._settle(int(ts.max()))
            return
        store = self._need_store()
        apos = pos[act]
        # Positives: in-window label actions on pending rows, one per row.
        inwin = (store.status[apos] == PENDING) & (ts[act] - store.ts[apos] < self.config.window_s)
        first = act[inwin][_first_unique(apos[inwin])]
        hit = pos[first]
        if self.config.wait_for_score:  # unscored: hold as CLICKED until scored()
            unscored = np.isnan(store.prior[hit])
            store.status[hit[unscored]] = CLICKED
            hit = hit[~unscored]
        self._positives(hit)
        used = np.zeros(m, dtype=bool)
        used[first] = True
        rest = act[~used[act]]
        self._advance(int(ts.max()))
        # Corrections: the remaining label actions on rows now NEGATIVE, one per row.
        rpos = pos[rest]
        neg = store.status[rpos] == NEGATIVE
        corr = rpos[neg][_first_unique(rpos[neg])]
        if corr.shape[0]:
            self._decide(corr, SampleKind.CORRECTION)
            self._counts["corrections"] += int(corr.shape[0])
        self._counts["duplicate_actions"] += int(rest.shape[0]) - int(corr.shape[0])
        self._forget()

    def advance(self, ts: int) -> None:
        """Move the watermark to ``ts`` (unix seconds) if later, and settle; e.g. when the
        log's producers are known to have passed ``ts``."""
        if isinstance(ts, bool) or not isinstance(ts, (int, np.integer)):
            raise InputError(f"ts: expected an integer (unix seconds), got {ts!r}")
        self._settle(int(ts))

    def scored(self, rid: np.ndarray, probability: np.ndarray) -> None:
        """The model's click probabilities ``float32[K]`` for impressions ``rid uint64[K]``
        when first seen; kept as the ``prior`` of their samples. Unknown rids are ignored."""
        _same_length(rid=_vec("rid", rid, np.uint64),
                     probability=_vec("probability", probability, np.float32))
        if self._store is None or rid.shape[0] == 0:
            return
        pos = self._index.find(rid.view(np.int64))
        ok = pos >= 0
        self._store.prior[pos[ok]] = probability[ok]
        self._counts["scored"] += int(ok.sum())
        waiting = pos[ok][self._store.status[pos[ok]] == CLICKED]
        self._positives(waiting[_first_unique(waiting)])  # clicked first: out now, scored

    def emit(self) -> Batch | None:
        """The samples decided since the last call, None if none.

        ``label float32[B]`` 0/1, ``event_time`` = impression time, ``prior float32[B]``;
        their rids and kinds are then :attr:`emitted_rid` and :attr:`emitted_kind`.
        """
        if not self._out:
            self._emitted_rid = np.empty(0, np.uint64)
            self._emitted_kind = np.empty(0, np.int8)
            return None
        rows = Rows.concat([r for r, _ in self._out])
        kind = np.concatenate([k for _, k in self._out])
        self._out = []
        self._emitted_rid, self._emitted_kind = rows.rid, kind
        return Batch(keys=rows.keys, dense=rows.dense,
                     label=(kind != SampleKind.NEGATIVE).astype(np.float32),
                     event_time=rows.ts, jagged=rows.jagged, prior=rows.prior)

    # ------------------------------------------------------------------ internals

    def _rows_of(self, rid: np.ndarray, ts: np.ndarray, f: Batch, n: int) -> Rows:
        if not isinstance(f, Batch):
            raise InputError(f"features: expected a Batch, got {type(f).__name__}")
        if f.keys.dtype != np.int64 or f.dense.dtype != np.float32:
            raise DTypeError(f"features: keys must be int64 and dense float32, got "
                             f"{f.keys.dtype} and {f.dense.dtype}")
        if f.keys.ndim != 2 or f.dense.ndim != 2 or f.keys.shape[0] != n or \
                f.dense.shape[0] != n:
            raise ShapeError(f"features: keys {list(f.keys.shape)} and dense "
                             f"{list(f.dense.shape)} must both have {n} rows")
        names = tuple(sorted(f.jagged))
        for k, j in f.jagged.items():
            if len(j) != n or j.values.dtype != np.int64:
                raise ShapeError(f"features.jagged[{k!r}]: expected int64 values for {n} "
                                 f"rows, got {len(j)} rows of {j.values.dtype}")
        layout = (int(f.keys.shape[1]), int(f.dense.shape[1]), names)
        if self._store is None:
            self._store = RowStore(*layout)
        elif layout != (self._store.n_fields, self._store.n_dense, self._store.jagged_names):
            s = self._store
            raise ShapeError(f"features: layout (fields, dense, jagged) {layout} differs from "
                             f"the first batch's {(s.n_fields, s.n_dense, s.jagged_names)}")
        prior = np.full(n, np.nan, np.float32)
        return Rows(rid, ts, prior, f.keys, f.dense, {k: f.jagged[k] for k in names})

    def _need_store(self) -> RowStore:
        if self._store is None:  # rows were found in the index, so a store exists
            raise InputError("joiner: no impression has been added yet")
        return self._store

    def _decide(self, pos: np.ndarray, kind: int) -> None:
        """Queue the rows at ``pos`` as samples of ``kind`` and update their status."""
        store = self._need_store()
        self._out.append((store.take(pos), np.full(pos.shape[0], kind, np.int8)))
        store.status[pos] = NEGATIVE if kind == SampleKind.NEGATIVE else POSITIVE
        self._min_recent_ts = min(self._min_recent_ts, int(store.ts[pos].min()))

    def _positives(self, pos: np.ndarray) -> None:
        """Emit the waiting rows at ``pos`` as positives."""
        if pos.shape[0]:
            self._decide(pos, SampleKind.POSITIVE)
            self._pending -= int(pos.shape[0])
            self._counts["positives"] += int(pos.shape[0])

    def _settle(self, ts: int) -> None:
        self._advance(ts)
        self._enforce_budget()
        self._forget()

    def _advance(self, ts: int) -> None:
        """Raise the watermark to ``ts`` and emit the expired pending rows as negatives."""
        self._watermark = max(self._watermark, ts)
        store = self._store
        if store is None or self._pending == 0 or self._watermark == _NO_TIME:
            return
        cut = self._watermark - self.config.window_s
        if self._min_pending_ts > cut:
            return
        st = store.status[:store.n]
        pend = np.flatnonzero((st == PENDING) | (st == CLICKED))
        pts = store.ts[pend]
        expired = pts <= cut
        gone = pend[expired]
        clicked = store.status[gone] == CLICKED  # never scored: emitted at its window's end
        self._positives(gone[clicked])
        silent = gone[~clicked]
        if silent.shape[0]:
            self._decide(silent, SampleKind.NEGATIVE)
            self._pending -= int(silent.shape[0])
            self._counts["negatives"] += int(silent.shape[0])
        left = pts[~expired]
        self._min_pending_ts = int(left.min()) if left.shape[0] else int(np.iinfo(np.int64).max)

    def _enforce_budget(self) -> None:
        over = self._pending - self.config.max_pending
        if over <= 0:
            return
        store = self._need_store()
        st = store.status[:store.n]
        drop = np.flatnonzero((st == PENDING) | (st == CLICKED))[:over]
        self._remove(drop)
        self._pending -= over
        self._counts["dropped_over_budget"] += over

    def _forget(self) -> None:
        """Forget decided rows past the correction horizon, then the oldest over budget."""
        store = self._store
        if store is None:
            return
        recent = store.live - self._pending
        horizon = self._watermark - self.config.window_s - self.config.correction_s
        over = recent - self.config.max_recent
        if recent == 0 or (self._min_recent_ts > horizon and over <= 0):
            return
        st = store.status[:store.n]
        dec = np.flatnonzero((st == NEGATIVE) | (st == POSITIVE))
        dts = store.ts[dec]
        old = dts <= horizon
        keep = dec[~old]
        over = int(keep.shape[0]) - self.config.max_recent
        gone = np.concatenate([dec[old], keep[:max(over, 0)]])
        if gone.shape[0]:
            self._remove(gone)
            self._counts["forgotten"] += int(gone.shape[0])
        rest = dts[~old][max(over, 0):]
        self._min_recent_ts = int(rest.min()) if rest.shape[0] else int(np.iinfo(np.int64).max)

    def _remove(self, pos: np.ndarray) -> None:
        store = self._need_store()
        self._index.erase(store.rid[pos].view(np.int64))
        store.free(pos)
        if store.wants_compaction():
            keep = store.compact()
            self._index.insert(store.rid[:keep.shape[0]].view(np.int64),
                               np.arange(keep.shape[0], dtype=np.int64))

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly: plain numeric arrays, no pickle.

        Keys: ``version``, ``watermark``, ``layout`` (``[F, D]``, -1 before any
        impression), ``counter.<name>``, the remembered rows ``rows.*`` (with
        ``rows.status``) and the decided but not yet emitted samples ``out.*`` (with
        ``out.kind``); a multi-valued field ``g`` as ``rows.jagged.g.values|offsets``.
        """
        st: dict[str, np.ndarray] = {
            "version": np.array([STATE_VERSION], np.int64),
            "watermark": np.array([self._watermark], np.int64)}
        for name, v in self._counts.items():
            st[f"counter.{name}"] = np.array([v], np.int64)
        store = self._store
        if store is None:
            st["layout"] = np.array([-1, -1], np.int64)
            return st
        st["layout"] = np.array([store.n_fields, store.n_dense], np.int64)
        live = store.live_positions()
        _put_rows(st, "rows", store.take(live))
        st["rows.status"] = store.status[live].copy()
        empty = Rows.empty(store.n_fields, store.n_dense, store.jagged_names)
        out = Rows.concat([empty] + [r for r, _ in self._out])
        _put_rows(st, "out", out)
        st["out.kind"] = np.concatenate([np.empty(0, np.int8)] + [k for _, k in self._out])
        return st

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``state`` (from :meth:`state`); on an error nothing is changed."""
        try:
            version = int(state["version"][0])
            if version != STATE_VERSION:
                raise CheckpointMismatchError(f"joiner state version {version}, "
                                              f"this build reads {STATE_VERSION}")
            watermark = int(state["watermark"][0])
            counts = {k: int(state[f"counter.{k}"][0]) for k in COUNTERS}
            f, d = (int(x) for x in state["layout"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CheckpointMismatchError(f"joiner state: missing or malformed entry "
                                          f"({exc!r})") from None
        new = Joiner(self.config)
        new._watermark, new._counts = watermark, counts
        if f >= 0:
            names = tuple(sorted(k[len("rows.jagged."):-len(".offsets")] for k in state
                                 if k.startswith("rows.jagged.") and k.endswith(".offsets")))
            rows = _get_rows(state, "rows", f, d, names)
            status = _arr(state, "rows.status", np.int8, (len(rows),))
            if ((status < PENDING) | (status > CLICKED)).any() or \
                    np.unique(rows.rid).shape[0] != len(rows):
                raise CheckpointMismatchError("joiner state: bad row status or repeated rids")
            out = _get_rows(state, "out", f, d, names)
            kind = _arr(state, "out.kind", np.int8, (len(out),))
            store = RowStore(f, d, names)
            pos = store.append(rows, PENDING)
            store.status[:len(rows)] = status
            new._store = store
            new._index.insert(rows.rid.view(np.int64), pos)
            pend = (status == PENDING) | (status == CLICKED)
            new._pending = int(pend.sum())
            new._min_pending_ts = int(rows.ts[pend].min()) if pend.any() else int(_NO_TIME)
            new._min_recent_ts = int(rows.ts[~pend].min()) if (~pend).any() else int(_NO_TIME)
            if len(out):
                new._out = [(out, kind)]
        self.__dict__.update(new.__dict__)


def _put_rows(st: dict[str, np.ndarray], p: str, rows: Rows) -> None:
    st[f"{p}.rid"], st[f"{p}.ts"], st[f"{p}.prior"] = rows.rid, rows.ts, rows.prior
    st[f"{p}.keys"], st[f"{p}.dense"] = rows.keys, rows.dense
    for k, j in rows.jagged.items():
        st[f"{p}.jagged.{k}.values"] = j.values
        st[f"{p}.jagged.{k}.offsets"] = j.offsets


def _arr(st: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    a = st.get(key)
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else repr(type(a))
        raise CheckpointMismatchError(f"joiner state: {key} should be "
                                      f"{np.dtype(dtype).name}{list(shape)}, got {got}")
    return a


def _get_rows(st: dict[str, np.ndarray], p: str, f: int, d: int,
              names: tuple[str, ...]) -> Rows:
    rid = st.get(f"{p}.rid")
    n = int(rid.shape[0]) if isinstance(rid, np.ndarray) and rid.ndim == 1 else -1
    jag = {}
    for k in names:
        off = _arr(st, f"{p}.jagged.{k}.offsets", np.int64, (n + 1,))
        vals = st.get(f"{p}.jagged.{k}.values")
        if not isinstance(vals, np.ndarray) or vals.dtype != np.int64 or vals.ndim != 1 or \
                off[0] != 0 or off[-1] != vals.shape[0] or (np.diff(off) < 0).any():
            raise CheckpointMismatchError(f"joiner state: {p}.jagged.{k} is inconsistent")
        jag[k] = Jagged(vals, off)
    return Rows(_arr(st, f"{p}.rid", np.uint64, (n,)), _arr(st, f"{p}.ts", np.int64, (n,)),
                _arr(st, f"{p}.prior", np.float32, (n,)),
                _arr(st, f"{p}.keys", np.int64, (n, f)),
                _arr(st, f"{p}.dense", np.float32, (n, d)), jag)
