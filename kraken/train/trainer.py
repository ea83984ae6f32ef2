"""The continual trainer: one pass over a stream, predict-then-learn, checkpointed.

Per batch (``now`` = the batch's newest event time)::

    prefetch thread:  read + parse the next batches, dedupe their IDs   (overlaps compute)
    main thread:      pull rows (train=True: admission) -> forward -> backward -> push
                      row gradients (sparse optimizers) -> record predictions (progressive
                      evaluation: scored by the forward, before learning) -> dense step
                      (torch.optim) -> records and checkpoints when due
    PS shards:        admit, apply, and evict on their own clock (``[ps] evict_every``)

The push comes before the metrics and the dense step, which touch no row: with a PS
that pushes in the background (``[ps] background_push``) they overlap the push, and
the next pull still sees it.

Its parts live beside it: :mod:`~kraken.train.pipeline` (prefetch thread, pull gate),
:mod:`~kraken.train.progressive` (metrics), :mod:`~kraken.train.cadence` (when to log
and checkpoint; injected clock), :mod:`~kraken.train.randomness` (the seeded
generator), :mod:`~kraken.train.records` (``metrics.jsonl``).

The PS is called in batch order (a pipelined pull and a background push are ordered
against the main thread's calls, see :mod:`~kraken.train.pipeline` and
:class:`~kraken.ps.ShardedPS`), and the model's randomness
comes from the trainer's own seeded generator, so a run is a pure function of (config,
data, seed), and a run resumed from a checkpoint continues exactly as the uninterrupted
run would have.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from kraken.checkpoint import CheckpointStore
from kraken.data.base import Batch, LogStream, Stream
from kraken.errors import CheckpointError, TrainingDivergedError
from kraken.nn.embedding import EmbeddingLayer, Prepared, Pulled
from kraken.nn.models.base import RankingModel
from kraken.ps.protocol import ParameterServer
from kraken.train.cadence import Cadence, Clock
from kraken.train.metrics import MetricSet
from kraken.train.pipeline import Prefetcher, PullGate
from kraken.train.progressive import ProgressiveEvaluation
from kraken.train.randomness import generator_scope, training_generator
from kraken.train.records import RecordLog
from kraken.train.settings import DenseOptimizer, TrainerConfig
from kraken.train.state import dense_state, load_dense_state

__all__ = ["DenseOptimizer", "PublishHook", "RunSummary", "Trainer", "TrainerConfig"]

_MAX_BAD_IN_A_ROW = 20


class PublishHook(Protocol):
    """What the trainer calls to publish versions for serving
    (:class:`kraken.serving.Publisher`): after every batch, and once at the end."""

    def maybe_publish(self, event_time: int | None = None) -> Any: ...

    def publish(self, *, dense: bool = False, full: bool = False) -> Any: ...


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did: samples and batches trained (in total, including before a resume),
    wall seconds of this process, cumulative progressive metrics, last table stats,
    and ``skipped``: malformed records the stream skipped in this process's iteration."""

    samples: int
    batches: int
    seconds: float
    metrics: dict[str, float]
    tables: dict[str, dict[str, int]]
    stopped: str
    checkpoint: str | None
    skipped: int = 0


def _rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    """Trains ``model`` (dense, torch) over ``embedding`` (rows on ``ps``) on ``stream``.

    ``run_dir`` receives ``metrics.jsonl`` and ``checkpoints/``; ``on_record`` gets every
    progress/window record as a dict (the CLI prints them); ``publisher`` is called after
    every batch (``maybe_publish(now)``) and at the end (``publish(dense=True)``) to
    publish versions for serving. ``clock`` (seconds, default ``time.perf_counter``)
    drives the log and checkpoint intervals. ``generator`` is the source of the model's
    randomness while training, seeded from ``config.seed`` and checkpointed.
    """

    def __init__(self, *, model: RankingModel, embedding: EmbeddingLayer, ps: ParameterServer,
                 stream: Stream, config: TrainerConfig, run_dir: str | Path | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 meta: dict[str, Any] | None = None,
                 publisher: PublishHook | None = None,
                 clock: Clock = time.perf_counter) -> None:
        self.publisher = publisher
        self.model, self.embedding, self.ps, self.stream = model, embedding, ps, stream
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_record = on_record
        self.meta = meta or {}
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = config.dense_optimizer.build(params, config.dense_lr)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.generator = training_generator(config.seed)
        self.evaluation = ProgressiveEvaluation(config.window)
        self.cadence = Cadence(config, clock)
        self.samples = 0
        self.batches = 0
        self.offset = 0
        self.nonfinite_batches = 0
        self._bad_in_a_row = 0
        self._stop = threading.Event()
        self._stop_reason = "end of stream"
        self.log = stream if isinstance(stream, LogStream) else None
        """The stream as a :class:`LogStream` (a checkpoint quiesces the reader and stores
        its position; commit acknowledges), or None for streams resumed by offset."""
        self._quiescing = False
        self._ckpt_waiting = False
        self.store = (CheckpointStore(self.run_dir / "checkpoints", keep=config.keep_checkpoints,
                                      full_every=config.checkpoint_full_every)
                      if self.run_dir is not None else None)

    @property
    def cumulative(self) -> MetricSet:
        """Progressive metrics over the whole run (continued across resumes)."""
        return self.evaluation.cumulative

    @property
    def window(self) -> MetricSet:
        """Progressive metrics over the current window."""
        return self.evaluation.window

    # -- control ------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current batch, write a final checkpoint, return from ``run``."""
        self._stop_reason = reason
        self._stop.set()

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Restore a checkpoint of ``run_dir``: the newest one, or ``checkpoint`` (a
        directory, a checkpoint name such as ``ckpt-000000000042``, or its step ``42``).
        Returns False if there is no checkpoint at all."""
        if self.store is None:
            raise CheckpointError("resume needs a run directory")
        path = self.store.latest() if checkpoint is None else self.store.find(checkpoint)
        if path is None:
            return False
        manifest = self.store.open(path)
        self.store.load_tables(path, self.ps)
        self._load_dense(self.store, path, manifest)
        self.evaluation.load_state(self.store.load_part(path, "metrics"))
        if "rng.kdat" in manifest.files:  # absent from checkpoints of older versions
            rng = self.store.load_part(path, "rng")["generator"]
            self.generator.set_state(torch.from_numpy(rng.copy()))
        if self.log is not None:
            if "stream.kdat" not in manifest.files:
                raise CheckpointError(f"{path}: no stream position in this checkpoint; it "
                                      "was not written by a run reading this log")
            self.log.seek(self.store.load_part(path, "stream"))
        self.samples, self.batches = manifest.samples, manifest.step
        self.offset = manifest.stream_offset
        return True

    def _load_dense(self, store: CheckpointStore, path: Path, manifest: Any) -> None:
        """The dense model and optimizer state of checkpoint ``path``."""
        try:
            load_dense_state(self.model, self.optimizer, store.load_part(path, "dense"),
                             manifest.meta["dense"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: dense state does not fit this model: {exc}"
                                  ) from exc

    def checkpoint(self) -> Path | None:
        """Write a checkpoint now (between batches, so every part is consistent).

        A :class:`LogStream`'s position is stored with it, and acknowledged to the log
        only once the checkpoint is committed; the caller makes sure no read is in
        progress (``run`` quiesces its reader first)."""
        if self.store is None:
            return None
        arrays, dmeta = dense_state(self.model, self.optimizer)
        rng = {"generator": self.generator.get_state().numpy().copy()}
        parts = {"dense": arrays, "metrics": self.evaluation.state(), "rng": rng}
        position = self.log.position() if self.log is not None else None
        if position is not None:
            parts["stream"] = position
        path = self.store.save(step=self.batches, samples=self.samples,
                               stream_offset=self.offset, ps=self.ps, parts=parts,
                               meta={**self.meta, "dense": dmeta})
        if position is not None:
            self.log.commit(position)  # type: ignore[union-attr]
        return path

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Train until the stream ends, ``max_samples`` is reached or a stop is requested.

        Records (``metrics.jsonl`` and ``on_record``): ``progress`` every ``log_every_s``,
        ``window`` after every ``window`` samples, one ``final``; each holds samples,
        batches, samples/s, window and cumulative metrics, per-table stats (live rows,
        admitted, evicted, ``memory_bytes``), peak RSS and ``skipped`` records; reading
        a :class:`LogStream`, also its consumer ``lag`` (entries, seconds).

        A log stream is checkpointed at a quiet point of the reader: when a checkpoint is
        due the reader stops reading ahead, the batches it already read are trained, then
        the checkpoint stores the log's position (and :meth:`LogStream.commit` follows
        the save). A stop (request, ``max_samples``) likewise trains what was read first.
        Empty batches (an idle log) train nothing but keep records, publishing and
        checkpoints going.
        """
        c = self.config
        self.cadence.start(self.samples)
        gate = PullGate() if c.pipeline else None
        ckpt_path: Path | None = None
        now = 0
        self.model.train()
        self.embedding.train()
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None else None
        with RecordLog(path, self.on_record) as records:
            start = 0 if self.log is not None else self.offset  # a log seeks on resume
            with Prefetcher(self.stream.batches(c.batch_size, start=start),
                            self.embedding.prepare, c.prefetch, gate=gate,
                            pull=self._pull_ahead) as items:
                for j, item in enumerate(items):
                    batch = item.prepared.batch if isinstance(item, Pulled) else item.batch
                    if c.max_samples is not None and self.samples >= c.max_samples \
                            and not self._quiescing:
                        self._stop_reason = "max_samples reached"
                        if not self._quiesce(items):
                            break
                    learned = None
                    if len(batch):
                        now = _batch_now(batch) or now
                        learned = self._learn(item, now)
                    if gate is not None:
                        gate.before_push(j)
                    if len(batch):
                        self.embedding.push(now)
                    if learned is not None:  # overlaps the push on a background-push PS
                        self._dense_step(*learned)
                    if batch.fresh is not None and len(batch.fresh):
                        self._score_fresh(batch.fresh, now)
                    self.offset = batch.offset
                    if self.publisher is not None:
                        self.publisher.maybe_publish(now)
                    if gate is not None:
                        gate.after_push(j)
                    self._after_batch(records, items)
                    if self._stop.is_set() and not self._quiescing:
                        if not self._quiesce(items):
                            break
                    if self._quiescing and items.quiet():
                        break
            if self.publisher is not None:
                self.publisher.publish(dense=True)
            if self.store is not None:
                ckpt_path = self.checkpoint()
            elapsed = self.cadence.elapsed()
            final = self._record("final", elapsed, self.samples - self.cadence.start_samples)
            records.emit(final)
        return RunSummary(samples=self.samples, batches=self.batches, seconds=elapsed,
                          metrics=self.cumulative.get(), tables=final["tables"],
                          stopped=self._stop_reason,
                          checkpoint=str(ckpt_path) if ckpt_path else None,
                          skipped=final["skipped"])

    def _pull_ahead(self, prepared: Prepared) -> Pulled:
        """The prefetch thread's pull (an idle log's empty batch admits nothing)."""
        now = _batch_now(prepared.batch)
        return self.embedding.pull(prepared, train=now is not None, now=now)

    def _quiesce(self, items: Prefetcher) -> bool:
        """Stopping: a log stream's reader is held and the batches it already read are
        trained before the loop ends (True); other streams stop at once (False)."""
        if self.log is None:
            return False
        self._quiescing = True
        items.hold()
        return True

    def _score_fresh(self, fresh: Batch, now: int) -> None:
        """Predict impressions whose labels are not known yet, with the model of this
        moment (no admission, no learning), and hand the probabilities to the stream."""
        if self.log is None:
            return
        was_training = self.model.training
        self.model.eval()
        self.embedding.eval()
        try:
            with torch.no_grad():
                pulled = self.embedding.pull(self.embedding.prepare(fresh), train=False,
                                             now=now)
                p = torch.sigmoid(self.model(self.embedding(pulled))).numpy()
        finally:
            self.model.train(was_training)
            self.embedding.train(was_training)
        self.log.scored(fresh, p.astype("float32", copy=False))

    def _after_batch(self, records: RecordLog, items: Prefetcher) -> None:
        """Window and progress records, and a checkpoint, when due."""
        cad = self.cadence
        cad.tick()
        if self.evaluation.window_full():
            records.emit(self._record("window", *cad.since_log(self.samples)))
            self.evaluation.next_window()
        if cad.log_due():
            records.emit(self._record("progress", *cad.since_log(self.samples)))
            cad.logged(self.samples)
        if self._ckpt_waiting:
            self._checkpoint_when_quiet(items)
        elif cad.checkpoint_due(self.samples):
            if self.samples == cad.ckpt_samples:
                cad.checkpointed(self.samples)  # nothing trained since the last one
            elif self.log is None:
                self.checkpoint()
                cad.checkpointed(self.samples)
            elif not self._quiescing:  # (a stopping run checkpoints at the end anyway)
                items.hold()  # a log's position is the reader's: quiesce, then save
                self._ckpt_waiting = True
                self._checkpoint_when_quiet(items)

    def _checkpoint_when_quiet(self, items: Prefetcher) -> None:
        """Save once the held reader is quiet, every batch it took trained (else try again
        after the next batch); then let it read on, unless the run is stopping."""
        if items.quiet():
            self._ckpt_waiting = False
            self.checkpoint()
            if not self._quiescing:
                items.release()
            self.cadence.checkpointed(self.samples)

    def _learn(self, item: Prepared | Pulled, now: int
               ) -> tuple[np.ndarray, torch.Tensor, np.ndarray | None] | None:
        """Pull (unless pipelined), score, backward; the row push and then :meth:`_dense_step`
        (given what this returns; None: nothing to learn from this batch) follow."""
        pulled = item if isinstance(item, Pulled) else self.embedding.pull(item, train=True,
                                                                            now=now)
        batch = pulled.prepared.batch
        with generator_scope(self.generator):
            logits = self.model(self.embedding(pulled))
        label = torch.from_numpy(batch.label)
        loss = self.loss_fn(logits, label)
        self.samples += len(batch)
        self.batches += 1
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            if self._grads_finite():
                self._bad_in_a_row = 0
                return batch.label, logits.detach(), batch.prior
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
        return None

    def _dense_step(self, label: np.ndarray, logits: torch.Tensor, prior: np.ndarray | None
                    ) -> None:
        """The progressive metrics of a learned batch, then its dense optimizer step."""
        p = torch.sigmoid(logits).numpy()
        if prior is not None:  # scored when the impression was first seen
            p = np.where(np.isfinite(prior), prior, p).astype(np.float32)
        self.evaluation.update(label, p)
        self.optimizer.step()

    def _grads_finite(self) -> bool:
        """Whether every gradient of the last backward (dense and row) is finite."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grads += self.embedding.pending_grads()
        return _all_finite(grads)

    def _record(self, kind: str, seconds: float, samples: int) -> dict[str, Any]:
        """One record; the only place the trainer asks the PS for its stats."""
        rate = samples / seconds if seconds > 0 else math.nan
        lag = {"lag": self.log.lag()} if self.log is not None else {}
        return {**lag, "kind": kind, "samples": self.samples, "batches": self.batches,
                "samples_per_s": rate, "window": self.window.get(),
                "cumulative": self.cumulative.get(), "rss_mb": _rss_mb(),
                "tables": _table_summary(self.ps.stats()),
                "skipped": int(self.stream.skipped), "time": time.time()}


def _table_summary(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Live rows, admitted, evicted and memory (bytes) per table, for records and summaries."""
    return {n: {"live_rows": s.live_rows, "admitted": s.admitted, "evicted": s.evicted,
                "memory_bytes": s.memory_bytes} for n, s in stats.items()}


_SUMMED_EXACTLY = (torch.float32, torch.float16, torch.bfloat16)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether no element of ``tensors`` is NaN or infinite, in one read of each.

    A float32/16 tensor is summed in float64: finite elements (at most 3.4e38 each) cannot
    overflow that sum, a NaN makes it NaN and an infinity makes it infinite or NaN, so
    the sum is finite exactly when every element is. Other dtypes are checked elementwise.
    """
    sums = [g.sum(dtype=torch.float64) for g in tensors if g.dtype in _SUMMED_EXACTLY]
    if sums and not bool(torch.isfinite(torch.stack(sums).sum())):
        return False
    return all(bool(torch.isfinite(g).all()) for g in tensors if g.dtype not in _SUMMED_EXACTLY)


def _batch_now(batch: Any) -> int | None:
    """A batch's ``now``: its newest event time (None for an empty batch)."""
    return int(batch.event_time.max()) if len(batch) else None

