"""Many workers training one model from one stream: the trainer's loop under torchrun.

Every worker (rank ``r`` of ``W``) runs this loop on its own blocks of the stream
(:mod:`~kraken.train.split`), ``ceil(batch_size / W)`` records each: ``batch_size`` is the
batch of one step over all workers, so ``W`` workers take the dense steps one worker
would take on the same records (raise ``batch_size`` to grow the step with ``W``). The
dense model is wrapped in
``DistributedDataParallel`` (gloo), so after every step every rank holds the same dense
weights; rows go through each worker's own client of the shared PS shards (pulls and
pushes asynchronous across workers, ``push_staleness`` per worker)::

    every step, every rank:
      next block (or none)  ->  control all-reduce [samples, has_batch, stop, ckpt, log]
      -> checkpoint / progress record if rank 0's cadence said so (collective)
      -> stop if any rank was asked to, or no rank has a batch
      -> pull -> forward (DDP) -> loss x n_r W / N -> backward (gradient all-reduce)
         -> dense step (same on every rank) -> push this rank's row gradients

A rank out of data still takes part in the step: it runs the model on its last inputs
with weight 0, so DDP's all-reduce completes and no rank is left waiting; the loss of a
rank with ``n_r`` of the step's ``N`` samples is weighted ``n_r W / N``, so the averaged
dense gradient is the gradient of the mean loss over all ``N`` samples (row gradients
are pushed unweighted, as a single worker would push them).

Checkpoints are one cut: at a step boundary every rank flushes its pushes, the metrics
are merged, every rank's stream offset and generator state gathered; rank 0 saves
(shards prepare, then dense, positions, metrics, manifest, commit) and a barrier holds
every rank until it is committed. Resume: rank 0 restores the shards, every rank the
dense state; the stream re-splits from the checkpoint's offset among the current ``W``.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from kraken.checkpoint.manifest import Manifest
from kraken.data.base import LogStream
from kraken.errors import CheckpointError, ConfigError, TrainingDivergedError
from kraken.nn.embedding import Prepared, Pulled
from kraken.nn.inputs import ModelInputs
from kraken.ps.router import Router
from kraken.train.group import Control, WorkerGroup
from kraken.train.pipeline import Prefetcher
from kraken.train.randomness import generator_scope, training_generator
from kraken.train.records import RecordLog
from kraken.train.split import split_batches
from kraken.train.state import dense_state
from kraken.train.trainer import (
    _MAX_BAD_IN_A_ROW,
    RunSummary,
    Trainer,
    _batch_now,
    _rss_mb,
    _table_summary,
)

__all__ = ["DistributedTrainer", "WorkerTimes"]


class WorkerTimes:
    """Seconds this worker spent in each phase, and the bytes its gradient all-reduce
    sent (dense parameter bytes per step; the latency of each bucket's all-reduce is
    summed, including waiting for slower ranks)."""

    def __init__(self) -> None:
        self.pull = self.push = self.allreduce = self.control = 0.0
        self.allreduce_bytes = 0
        self.steps = 0

    def as_dict(self) -> dict[str, float]:
        return {"pull_s": self.pull, "push_s": self.push, "allreduce_s": self.allreduce,
                "control_s": self.control, "allreduce_bytes": float(self.allreduce_bytes),
                "steps": float(self.steps)}


def _timed_allreduce_hook(times: WorkerTimes, world: int) -> Callable[..., Any]:
    """DDP's default hook (average by all-reduce) that also times each bucket."""

    def hook(_state, bucket):  # type: ignore[no-untyped-def] # DDP checks these annotations
        buf = bucket.buffer()
        buf.div_(world)
        t0 = time.perf_counter()
        times.allreduce_bytes += buf.numel() * buf.element_size()
        fut = dist.all_reduce(buf, async_op=True).get_future()  # type: ignore[union-attr]

        def done(f: torch.futures.Future[Any]) -> torch.Tensor:
            times.allreduce += time.perf_counter() - t0
            return f.value()[0]  # type: ignore[no-any-return]

        return fut.then(done)

    return hook


class DistributedTrainer(Trainer):
    """A :class:`Trainer` that is one of ``group.world`` workers (see the module docstring).

    Takes the trainer's arguments plus ``group``. Rank 0 alone writes ``metrics.jsonl``,
    calls ``on_record`` and the publisher, and writes checkpoints. ``on_block(start,
    end)``, when given, is called with the record range ``[start, end)`` of every block
    this rank trains (for drills that count records trained twice). ``pipeline`` is not
    used: every pull happens in the step.

    ``ordered``: the ranks pull, then push, one after another in rank order (a barrier
    between turns; pushes flushed in the turn), so the shards see one fixed interleaving
    and a run is a pure function of (config, data, seed, W): a resumed run ends with the
    same model as an uninterrupted one. Costs ``2 W`` barriers per step; without it the
    ranks' calls interleave as they come (pulls of a step still follow every push of
    the step before, with ``push_staleness = 0``).
    """

    def __init__(self, *, group: WorkerGroup,
                 on_block: Callable[[int, int], None] | None = None, ordered: bool = False,
                 **kwargs: Any) -> None:
        if isinstance(kwargs.get("stream"), LogStream):
            raise ConfigError("a log stream (its consumer position) cannot be split among "
                              "workers yet; train it with one worker")
        super().__init__(**kwargs)
        self.group = group
        self.on_block = on_block
        self.ordered = ordered
        self.times = WorkerTimes()
        if group.rank:  # each rank its own draws; rank 0 those of a single worker
            derived = int(np.random.SeedSequence([self.config.seed, group.rank]
                                                 ).generate_state(1)[0])
            self.generator = training_generator(derived)
        self.ddp = DistributedDataParallel(self.model)
        self.ddp.register_comm_hook(None, _timed_allreduce_hook(self.times, group.world))
        self.block = -(-self.config.batch_size // group.world)
        """Records per worker per step: ``batch_size`` is the step's batch over all workers."""
        self.origin = 0
        self._last_inputs: ModelInputs | None = None
        self.workers: list[dict[str, Any]] = []
        """Each worker's own figures in the final record (rank, samples, auc, ...)."""
        self._window_samples = 0

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> Path | None:
        """Every rank calls this at the same step boundary (a collective)."""
        g = self.group
        self.ps.flush()  # this rank's pushes are applied before any shard writes
        merged = g.merged(self.evaluation.cumulative)
        offsets = [int(v[0]) for v in g.gather([float(self.offset)])]
        rngs = g.gather_bytes(self.generator.get_state().numpy().tobytes())
        path = None
        if g.leader and self.store is not None:
            arrays, dmeta = dense_state(self.model, self.optimizer)
            rng = {("generator" if r == 0 else f"generator.{r}"):
                   np.frombuffer(b, dtype=np.uint8).copy() for r, b in enumerate(rngs)}
            workers = {"world": g.world, "block": self.block,
                       "origin": self.origin, "offsets": offsets}
            path = self.store.save(step=self.batches, samples=self.samples,
                                   stream_offset=max(offsets), ps=self.ps,
                                   parts={"dense": arrays, "metrics": merged.state(),
                                          "rng": rng},
                                   meta={**self.meta, "dense": dmeta, "workers": workers})
        g.barrier()  # nobody pushes again before the checkpoint is committed
        return path

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Rank 0 chooses the checkpoint and restores the shards; every rank restores the
        dense state and its generator; the stream re-splits from the checkpoint's offset."""
        if self.store is None:
            raise CheckpointError("resume needs a run directory")
        g = self.group
        name = None
        if g.leader:
            path = self.store.latest() if checkpoint is None else self.store.find(checkpoint)
            name = None if path is None else str(path)
        name = g.broadcast_json(name)
        if name is None:
            return False
        path = Path(name)
        manifest = self.store.open(path)
        router = None
        if g.leader:
            self.store.load_tables(path, self.ps)
            self.evaluation.load_state(self.store.load_part(path, "metrics"))
            router = self.ps.router.to_dict()  # type: ignore[attr-defined]
        router = g.broadcast_json(router)
        if not g.leader:
            _follow(self.ps, Router.from_dict(router), path.name)
        self._load_dense(self.store, path, manifest)
        self._load_generator(path, manifest)
        self.samples, self.batches = manifest.samples, manifest.step
        self.origin = self.offset = manifest.stream_offset
        g.barrier()  # no rank pulls before the shards are restored
        return True

    def _load_generator(self, path: Path, manifest: Manifest) -> None:
        if "rng.kdat" not in manifest.files:
            return
        rng = self.store.load_part(path, "rng")  # type: ignore[union-attr]
        key = "generator" if self.group.rank == 0 else f"generator.{self.group.rank}"
        if key in rng:  # a rank the writing run did not have keeps its fresh generator
            self.generator.set_state(torch.from_numpy(rng[key].copy()))

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        c, g = self.config, self.group
        self.cadence.start(self.samples)
        ckpt_path: Path | None = None
        now = 0
        self.model.train()
        self.embedding.train()
        lead = g.leader
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None and lead else None
        blocks = split_batches(self.stream, self.block, origin=self.origin, rank=g.rank,
                               world=g.world)
        with RecordLog(path, self.on_record if lead else None) as records, \
                Prefetcher(blocks, self.embedding.prepare, c.prefetch) as items:
            it = iter(items)
            while True:
                item: Prepared | None = next(it, None)
                self.cadence.tick()
                t0 = time.perf_counter()
                ctl = g.control(
                    samples=len(item.batch) if item is not None else 0,
                    stop=self._stop.is_set() or (c.max_samples is not None
                                                 and self.samples >= c.max_samples),
                    checkpoint=self.store is not None
                    and self.cadence.checkpoint_due(self.samples),
                    log=self.cadence.log_due())
                self.times.control += time.perf_counter() - t0
                ending = ctl.stop or ctl.active == 0
                if ctl.checkpoint and not ending and self.store is not None:  # (else: final)
                    self.checkpoint()
                    self.cadence.checkpointed(self.samples)
                if ctl.log:
                    records.emit(self._record("progress", *self.cadence.since_log(self.samples)))
                    self.cadence.logged(self.samples)
                if ending:
                    if ctl.stop and not self._stop.is_set():
                        self._stop_reason = ("max_samples reached" if c.max_samples is not None
                                             and self.samples >= c.max_samples
                                             else "another worker was asked to stop")
                    break
                now = self._step(item, ctl, now)
                if self._window_samples >= c.window:
                    records.emit(self._record("window", *self.cadence.since_log(self.samples),
                                              window=True))
                    self.evaluation.next_window()
                    self._window_samples = 0
            if self.publisher is not None and lead:
                self.publisher.publish(dense=True)
            if self.store is not None:
                ckpt_path = self.checkpoint()
            elapsed = self.cadence.elapsed()
            final = self._record("final", elapsed, self.samples - self.cadence.start_samples)
            self.workers = final["workers"]
            records.emit(final)
        return RunSummary(samples=self.samples, batches=self.batches, seconds=elapsed,
                          metrics=final["cumulative"], tables=final["tables"],
                          stopped=self._stop_reason,
                          checkpoint=str(ckpt_path) if ckpt_path else None,
                          skipped=final["skipped"])

    def _step(self, item: Prepared | None, ctl: Control, now: int) -> int:
        """One step: this rank's block (or a zero-weighted one) through DDP."""
        g, times = self.group, self.times
        if item is not None:
            batch = item.batch
            now = _batch_now(batch) or now
            t0 = time.perf_counter()
            with self._turn():
                pulled: Pulled = self.embedding.pull(item, train=True, now=now)
            times.pull += time.perf_counter() - t0
            inputs = self.embedding(pulled)
            weight = len(batch) * g.world / ctl.samples
        else:
            with self._turn():
                pass
            inputs = self._idle_inputs()
            weight = 0.0
        with generator_scope(self.generator):
            logits = self.ddp(inputs)
        if item is not None:
            loss = self.loss_fn(logits, torch.from_numpy(item.batch.label))
            self._last_inputs = _detached(inputs)
        else:
            loss = logits.sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()  # on every rank, finite or not: DDP all-reduces here
        dense_ok = all(bool(torch.isfinite(p.grad).all())  # identical on every rank
                       for p in self.model.parameters() if p.grad is not None)
        if dense_ok:
            self.optimizer.step()
        self.samples += ctl.samples
        self.batches += 1
        self._window_samples += ctl.samples
        times.steps += 1
        if item is None:
            with self._turn():
                pass
            return now
        grads = self.embedding.pending_grads()
        if weight != 1.0:
            for grad in grads:  # rows learn from their own samples, unweighted
                grad.div_(weight)
        if dense_ok and bool(torch.isfinite(loss)) and \
                all(bool(torch.isfinite(gr).all()) for gr in grads):
            p = torch.sigmoid(logits.detach()).numpy()
            prior = item.batch.prior
            if prior is not None:  # scored when the impression was first seen
                p = np.where(np.isfinite(prior), prior, p).astype(np.float32)
            self.evaluation.update(item.batch.label, p)
            t0 = time.perf_counter()
            with self._turn():
                self.embedding.push(now)
                if self.ordered:
                    self.ps.flush()
            times.push += time.perf_counter() - t0
            self._bad_in_a_row = 0
        else:
            with self._turn():
                pass
            self.embedding.discard()
            self.nonfinite_batches += 1
            self._bad_in_a_row += 1
            if self._bad_in_a_row >= _MAX_BAD_IN_A_ROW:
                raise TrainingDivergedError(
                    f"rank {g.rank}: {self._bad_in_a_row} batches in a row gave non-finite "
                    "loss or gradients; the model has diverged (lower the learning rates)")
        self.offset = item.batch.offset
        if self.on_block is not None:
            self.on_block(item.batch.offset - len(item.batch), item.batch.offset)
        if self.publisher is not None and g.leader:
            self.publisher.maybe_publish(now)
        return now

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """With ``ordered``: run the body when it is this rank's turn (rank order)."""
        if not self.ordered:
            yield
            return
        for r in range(self.group.world):
            if r == self.group.rank:
                yield
            self.group.barrier()

    def _idle_inputs(self) -> ModelInputs:
        """Inputs for a zero-weighted step: the last batch's, or one all-zero sample."""
        if self._last_inputs is not None:
            return self._last_inputs
        layout = self.embedding.layout
        f, d = layout.n_fields, self.embedding.dim
        n_dense = len(layout.schema.dense)
        wide = torch.zeros(1, f) if layout.has_wide else None
        seqs = {name: (torch.zeros(1, 1, d), torch.ones(1, 1, dtype=torch.bool))
                for name in layout.sequence_fields}
        return ModelInputs(emb=torch.zeros(1, f, d), dense=torch.zeros(1, n_dense), wide=wide,
                           sequences=seqs)

    def _record(self, kind: str, seconds: float, samples: int, *,
                window: bool = False) -> dict[str, Any]:
        """A record over every rank's predictions (a collective): merged window and
        cumulative metrics, and each worker's own cumulative ones under ``workers``."""
        g = self.group
        merged = g.merged(self.evaluation.cumulative)
        win = g.merged(self.evaluation.window)
        own = self.evaluation.cumulative.get()
        per = g.gather([own["samples"], own["auc"], own["logloss"], own["calibration"],
                        float(self.offset), float(_digest(self.model))])
        rate = samples / seconds if seconds > 0 else float("nan")
        rec = {"kind": kind, "samples": self.samples, "batches": self.batches,
               "samples_per_s": rate, "window": win.get(), "cumulative": merged.get(),
               "rss_mb": _rss_mb(),
               "tables": _table_summary(self.ps.stats()) if g.leader else {},
               "skipped": int(self.stream.skipped), "time": time.time(),
               "world": g.world,
               "workers": [{"rank": r, "samples": int(v[0]), "auc": v[1], "logloss": v[2],
                            "calibration": v[3], "offset": int(v[4]), "dense_crc32": int(v[5])}
                           for r, v in enumerate(per)]}
        if window:
            rec["window_samples"] = win.samples
        return rec


def _digest(model: torch.nn.Module) -> int:
    """crc32 of every dense weight's bytes: equal on every rank when DDP keeps them equal."""
    crc = 0
    for t in model.state_dict().values():
        crc = zlib.crc32(t.detach().contiguous().numpy().tobytes(), crc)
    return crc


def _detached(inputs: ModelInputs) -> ModelInputs:
    return ModelInputs(emb=inputs.emb.detach(), dense=inputs.dense.detach(),
                       wide=None if inputs.wide is None else inputs.wide.detach(),
                       sequences={k: (v.detach(), m) for k, (v, m) in inputs.sequences.items()})


def _follow(ps: Any, router: Router, checkpoint: str) -> None:
    """A rank other than 0 takes the layout rank 0 restored the shards into."""
    ps.router = router
    ps.checkpoint = checkpoint
