"""A small reference joiner of the interface the log source feeds (kraken.data.join's):
impressions wait ``window_s`` of event time; a label action marks them positive; they
are emitted when the watermark (newest ``ts`` seen) passes ``ts + window_s``. No
corrections, no budget: the tests of the source need only the interface."""

from __future__ import annotations

import numpy as np

from kraken.data._batchstate import batch_from_state, batch_state, concat_batches, empty_batch
from kraken.data._columns import take_jagged
from kraken.data.base import Batch, Schema


def take(b: Batch, idx: np.ndarray) -> Batch:
    prior = b.prior[idx] if b.prior is not None else None
    return Batch(keys=b.keys[idx], dense=b.dense[idx], label=b.label[idx],
                 event_time=b.event_time[idx],
                 jagged={k: take_jagged(v, idx) for k, v in b.jagged.items()}, prior=prior)


class WindowJoiner:
    def __init__(self, schema: Schema, window_s: int, label_kinds: tuple[int, ...] = (0,)):
        self.schema, self.window_s = schema, int(window_s)
        self.label_kinds = np.asarray(label_kinds, dtype=np.int8)
        self.rid = np.zeros(0, np.uint64)
        self.rows = empty_batch(schema)
        self.watermark = np.iinfo(np.int64).min
        self.counters = {"pending": 0, "positives": 0, "negatives": 0, "orphan_actions": 0}

    def add_impressions(self, rid, ts, features):
        assert len(rid) == len(ts) == len(features)
        self.rid = np.concatenate([self.rid, rid])
        rows = Batch(keys=features.keys, dense=features.dense,
                     label=np.zeros(len(rid), np.float32), event_time=ts,
                     jagged=features.jagged, prior=np.full(len(rid), np.nan, np.float32))
        self.rows = concat_batches([self.rows, rows], self.schema)
        self.watermark = max(self.watermark, int(ts.max()))

    def add_actions(self, rid, ts, kind):
        self.watermark = max(self.watermark, int(ts.max()))
        lab = rid[np.isin(kind, self.label_kinds)]
        hit = np.isin(self.rid, lab)
        self.rows.label[hit] = 1.0
        self.counters["orphan_actions"] += int((~np.isin(lab, self.rid)).sum())

    def emit(self):
        due = self.rows.event_time + self.window_s <= self.watermark
        if not due.any():
            return None
        out = take(self.rows, np.flatnonzero(due))
        keep = np.flatnonzero(~due)
        self.rows, self.rid = take(self.rows, keep), self.rid[keep]
        self.counters["positives"] += int(out.label.sum())
        self.counters["negatives"] += int(len(out) - out.label.sum())
        self.counters["pending"] = len(self.rid)
        return out

    def scored(self, rid, probability):
        order = np.argsort(rid)
        pos = np.searchsorted(rid[order], self.rid)
        pos = np.minimum(pos, len(rid) - 1)
        hit = rid[order][pos] == self.rid
        self.rows.prior[hit] = probability[order][pos][hit]

    def state(self):
        return {"rid": self.rid, "watermark": np.array([self.watermark]),
                **batch_state("rows", self.rows)}

    def load_state(self, state):
        self.rid = np.asarray(state["rid"], np.uint64).copy()
        self.watermark = int(state["watermark"][0])
        self.rows = batch_from_state("rows", state, self.schema)
        if self.rows.prior is None:
            self.rows = Batch(keys=self.rows.keys, dense=self.rows.dense,
                              label=self.rows.label.copy(), event_time=self.rows.event_time,
                              jagged=self.rows.jagged,
                              prior=np.full(len(self.rid), np.nan, np.float32))
        self.counters["pending"] = len(self.rid)
