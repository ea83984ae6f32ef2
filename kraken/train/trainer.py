"""The continual trainer: one pass over a stream, predict-then-learn, checkpointed.

Per batch (``now`` = the batch's newest event time)::

    prefetch thread:  read + parse the next batches, dedupe their IDs   (overlaps compute)
    main thread:      pull rows (train=True: admission) -> forward -> record predictions
                      (progressive evaluation: scored before learning) -> backward ->
                      dense step (torch.optim) -> push row gradients (sparse optimizers)
                      -> every `evict_every` batches: evict(now) -> checkpoint when due

The PS is touched only from the main thread, in batch order, so a run is a pure
function of (config, data, seed), and a run resumed from a checkpoint continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import resource
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from kraken.checkpoint import CheckpointStore
from kraken.config import check_int, check_positive
from kraken.data.base import Stream
from kraken.errors import CheckpointError, ConfigError, TrainingDivergedError
from kraken.nn.embedding import EmbeddingLayer, Prepared, Pulled
from kraken.nn.models.base import RankingModel
from kraken.ps.protocol import ParameterServer
from kraken.train.metrics import MetricSet
from kraken.train.state import dense_state, load_dense_state

__all__ = ["PublishHook", "RunSummary", "Trainer", "TrainerConfig"]

_MAX_BAD_IN_A_ROW = 20

_DENSE_OPTIMIZERS = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad,
                     "sgd": torch.optim.SGD}


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How to train. Counts are in samples unless named otherwise.

    Attributes:
        batch_size: samples per step.
        dense_optimizer / dense_lr: torch optimizer of the dense parameters.
        window: samples per progressive-evaluation window.
        log_every_s: seconds between progress records.
        evict_every: batches between eviction passes.
        checkpoint_every_samples / checkpoint_every_s: checkpoint cadence (None = off).
        keep_checkpoints: newest checkpoints kept.
        max_samples: stop after this many samples (None = until the stream ends).
        prefetch: batches read and deduplicated ahead.
        pipeline: also pull the next batch's rows in the background while the current
            batch computes. Rows then miss the previous batch's update (one step of
            staleness, as in an asynchronous PS); runs stay deterministic, but a resumed
            run is no longer bit-identical to an uninterrupted one.
        seed: torch seed for the dense model.
    """

    batch_size: int = 4096
    dense_optimizer: str = "adam"
    dense_lr: float = 1e-3
    window: int = 100_000
    log_every_s: float = 2.0
    evict_every: int = 10
    checkpoint_every_samples: int | None = None
    checkpoint_every_s: float | None = None
    keep_checkpoints: int = 3
    max_samples: int | None = None
    prefetch: int = 2
    pipeline: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, lo=1)
        if self.dense_optimizer not in _DENSE_OPTIMIZERS:
            raise ConfigError(f"dense_optimizer: expected one of {sorted(_DENSE_OPTIMIZERS)}, "
                              f"got {self.dense_optimizer!r}")
        check_positive("dense_lr", self.dense_lr)
        check_int("window", self.window, lo=1)
        check_positive("log_every_s", self.log_every_s)
        check_int("evict_every", self.evict_every, lo=1)
        if self.checkpoint_every_samples is not None:
            check_int("checkpoint_every_samples", self.checkpoint_every_samples, lo=1)
        if self.checkpoint_every_s is not None:
            check_positive("checkpoint_every_s", self.checkpoint_every_s)
        check_int("keep_checkpoints", self.keep_checkpoints, lo=1)
        if self.max_samples is not None:
            check_int("max_samples", self.max_samples, lo=0)
        check_int("prefetch", self.prefetch, lo=1)
        check_int("seed", self.seed, lo=0)


class PublishHook(Protocol):
    """What the trainer calls to publish versions for serving
    (:class:`kraken.serving.Publisher`): after every batch, and once at the end."""

    def maybe_publish(self, event_time: int | None = None) -> Any: ...

    def publish(self, *, dense: bool = False, full: bool = False) -> Any: ...


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did: samples and batches trained (in total, including before a resume),
    wall seconds of this process, cumulative progressive metrics, last table stats."""

    samples: int
    batches: int
    seconds: float
    metrics: dict[str, float]
    tables: dict[str, dict[str, int]]
    stopped: str
    checkpoint: str | None


def _rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _PullGate:
    """Orders background pulls between pushes, so a pipelined run stays deterministic.

    ``pull(j)`` may start once batch ``j - 2`` is fully pushed (and evicted), and
    ``push(j)`` waits until ``pull(j + 1)`` is done or the stream has ended: every pull
    of batch ``j + 1`` lands exactly between ``push(j - 1)`` and ``push(j)``.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.pushed = self.pulled = -1
        self.ended = self.stopped = False

    def _set(self, **kw: Any) -> None:
        with self._cv:
            for k, v in kw.items():
                setattr(self, k, v)
            self._cv.notify_all()

    def before_pull(self, j: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self.pushed >= j - 2 or self.stopped)

    def before_push(self, j: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self.pulled >= j + 1 or self.ended or self.stopped)

    def after_pull(self, j: int) -> None:
        self._set(pulled=j)

    def after_push(self, j: int) -> None:
        self._set(pushed=j)


class _Prefetcher:
    """Reads and dedupes (and, with a gate, pulls) batches in a background thread, in order."""

    _END = object()

    def __init__(self, batches: Iterator[Any], prepare: Callable[[Any], Prepared],
                 depth: int, pull: Callable[[Prepared], Pulled] | None = None,
                 gate: _PullGate | None = None) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.gate = gate
        self._thread = threading.Thread(target=self._run, args=(batches, prepare, pull),
                                        name="kraken-prefetch", daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[Any], prepare: Callable[[Any], Prepared],
             pull: Callable[[Prepared], Pulled] | None) -> None:
        try:
            for j, b in enumerate(batches):
                item: Any = prepare(b)
                if pull is not None and self.gate is not None:
                    self.gate.before_pull(j)
                    if self._stop.is_set():
                        return
                    item = pull(item)
                    self.gate.after_pull(j)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(self._END)
        except BaseException as exc:  # surfaced in the main thread
            self._q.put(exc)
        finally:
            if self.gate is not None:
                self.gate._set(ended=True)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self.gate is not None:
            self.gate._set(stopped=True)
        self._thread.join(timeout=5)


class Trainer:
    """Trains ``model`` (dense, torch) over ``embedding`` (rows on ``ps``) on ``stream``.

    ``run_dir`` receives ``metrics.jsonl`` and ``checkpoints/``; ``on_record`` gets every
    progress/window record as a dict (the CLI prints them); ``publisher`` is called after
    every batch (``maybe_publish(now)``) and at the end (``publish(dense=True)``) to
    publish versions for serving.
    """

    def __init__(self, *, model: RankingModel, embedding: EmbeddingLayer, ps: ParameterServer,
                 stream: Stream, config: TrainerConfig, run_dir: str | Path | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 meta: dict[str, Any] | None = None,
                 publisher: PublishHook | None = None) -> None:
        self.publisher = publisher
        self.model, self.embedding, self.ps, self.stream = model, embedding, ps, stream
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_record = on_record
        self.meta = meta or {}
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _DENSE_OPTIMIZERS[config.dense_optimizer](params, lr=config.dense_lr)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.cumulative = MetricSet()
        self.window = MetricSet(auc_bins=1 << 16)
        self.samples = 0
        self.batches = 0
        self.offset = 0
        self.nonfinite_batches = 0
        self._bad_in_a_row = 0
        self._stop = threading.Event()
        self._stop_reason = "end of stream"
        self.store = (CheckpointStore(self.run_dir / "checkpoints", keep=config.keep_checkpoints)
                      if self.run_dir is not None else None)

    # -- control ------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current batch, write a final checkpoint, return from ``run``."""
        self._stop_reason = reason
        self._stop.set()

    def resume(self) -> bool:
        """Restore the newest checkpoint in ``run_dir``; False if there is none."""
        if self.store is None:
            raise CheckpointError("resume needs a run directory")
        latest = self.store.latest()
        if latest is None:
            return False
        manifest = self.store.open(latest)
        self.store.load_tables(latest, self.ps)
        try:
            load_dense_state(self.model, self.optimizer, self.store.load_part(latest, "dense"),
                             manifest.meta["dense"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{latest}: dense state does not fit this model: {exc}"
                                  ) from exc
        self.cumulative.load_state(self.store.load_part(latest, "metrics"))
        self.samples, self.batches = manifest.samples, manifest.step
        self.offset = manifest.stream_offset
        return True

    def checkpoint(self) -> Path | None:
        """Write a checkpoint now (between batches, so every part is consistent)."""
        if self.store is None:
            return None
        arrays, dmeta = dense_state(self.model, self.optimizer)
        return self.store.save(step=self.batches, samples=self.samples,
                               stream_offset=self.offset, ps=self.ps,
                               parts={"dense": arrays, "metrics": self.cumulative.state()},
                               meta={**self.meta, "dense": dmeta})

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Train until the stream ends, ``max_samples`` is reached or a stop is requested."""
        c = self.config
        start_t = time.perf_counter()
        last_log = last_ckpt_t = start_t
        last_ckpt_samples = start_samples = self.samples
        log_samples, log_t = self.samples, start_t
        ckpt_path: Path | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        records = (open(self.run_dir / "metrics.jsonl", "a")  # noqa: SIM115
                   if self.run_dir is not None else None)
        gate = _PullGate() if c.pipeline else None
        prefetch = _Prefetcher(
            self.stream.batches(c.batch_size, start=self.offset), self.embedding.prepare,
            c.prefetch, gate=gate,
            pull=lambda p: self.embedding.pull(p, train=True, now=_batch_now(p.batch)))
        self.model.train()
        self.embedding.train()
        now = 0
        try:
            for j, item in enumerate(prefetch):
                batch = item.prepared.batch if isinstance(item, Pulled) else item.batch
                if c.max_samples is not None and self.samples >= c.max_samples:
                    self._stop_reason = "max_samples reached"
                    break
                now = _batch_now(batch) or now
                self._learn(item, now)
                if gate is not None:
                    gate.before_push(j)
                self.embedding.push(now)
                self.offset = batch.offset
                if self.batches % c.evict_every == 0:
                    self.ps.evict(now)
                if self.publisher is not None:
                    self.publisher.maybe_publish(now)
                if gate is not None:
                    gate.after_push(j)
                t = time.perf_counter()
                if self.window.samples >= c.window:
                    self._emit(records, self._record("window", t - log_t,
                                                     self.samples - log_samples))
                    self.window.reset()
                if t - last_log >= c.log_every_s:
                    self._emit(records, self._record("progress", t - log_t,
                                                     self.samples - log_samples))
                    last_log, log_t, log_samples = t, t, self.samples
                due = ((c.checkpoint_every_samples is not None
                        and self.samples - last_ckpt_samples >= c.checkpoint_every_samples)
                       or (c.checkpoint_every_s is not None
                           and t - last_ckpt_t >= c.checkpoint_every_s))
                if due:
                    ckpt_path = self.checkpoint()
                    last_ckpt_t, last_ckpt_samples = time.perf_counter(), self.samples
                if self._stop.is_set():
                    break
        finally:
            prefetch.close()
        if self.publisher is not None:
            self.publisher.publish(dense=True)
        if self.store is not None:
            ckpt_path = self.checkpoint()
        elapsed = time.perf_counter() - start_t
        final = self._record("final", elapsed, self.samples - start_samples)
        self._emit(records, final)
        if records is not None:
            records.close()
        stats = self.ps.stats()
        return RunSummary(samples=self.samples, batches=self.batches, seconds=elapsed,
                          metrics=self.cumulative.get(),
                          tables=_table_summary(stats),
                          stopped=self._stop_reason,
                          checkpoint=str(ckpt_path) if ckpt_path else None)

    def _learn(self, item: Prepared | Pulled, now: int) -> None:
        """Pull (unless pipelined), score, then learn one batch; the row push follows."""
        pulled = item if isinstance(item, Pulled) else self.embedding.pull(item, train=True,
                                                                            now=now)
        batch = pulled.prepared.batch
        inputs = self.embedding(pulled)
        logits = self.model(inputs)
        label = torch.from_numpy(batch.label)
        loss = self.loss_fn(logits, label)
        self.samples += len(batch)
        self.batches += 1
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            if self._grads_finite():
                p = torch.sigmoid(logits.detach()).numpy()
                self.cumulative.update(batch.label, p)
                self.window.update(batch.label, p)
                self.optimizer.step()
                self._bad_in_a_row = 0
                return
        # A non-finite loss or gradient: learn nothing from this batch, keep running.
        self.embedding.discard()
        self.nonfinite_batches += 1
        self._bad_in_a_row += 1
        warnings.warn(f"batch {self.batches}: non-finite loss or gradients, update skipped "
                      f"({self.nonfinite_batches} so far)", RuntimeWarning, stacklevel=2)
        if self._bad_in_a_row >= _MAX_BAD_IN_A_ROW:
            raise TrainingDivergedError(
                f"{self._bad_in_a_row} batches in a row gave non-finite loss or gradients; "
                "the model has diverged (lower the learning rates)")

    def _grads_finite(self) -> bool:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grads += self.embedding.pending_grads()
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def _record(self, kind: str, seconds: float, samples: int) -> dict[str, Any]:
        stats = self.ps.stats()
        rate = samples / seconds if seconds > 0 else math.nan
        return {"kind": kind, "samples": self.samples, "batches": self.batches,
                "samples_per_s": rate, "window": self.window.get(),
                "cumulative": self.cumulative.get(), "rss_mb": _rss_mb(),
                "tables": _table_summary(stats),
                "time": time.time()}

    def _emit(self, records: Any, record: dict[str, Any]) -> None:
        if records is not None:
            records.write(json.dumps(record, default=_json_default) + "\n")
            records.flush()
        if self.on_record is not None:
            self.on_record(record)


def _table_summary(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Live rows, admitted, evicted and memory per table, for records and summaries."""
    return {n: {"live_rows": s.live_rows, "admitted": s.admitted, "evicted": s.evicted,
                "memory_bytes": s.memory_bytes} for n, s in stats.items()}


def _batch_now(batch: Any) -> int | None:
    """A batch's ``now``: its newest event time (None for an empty batch)."""
    return int(batch.event_time.max()) if len(batch) else None


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
