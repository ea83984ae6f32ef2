"""The training workers of one run, as the trainer sees them: ranks and a few collectives.

A :class:`WorkerGroup` wraps an initialised ``torch.distributed`` process group (gloo,
started by ``torchrun``; see ``kraken.cli.train``). Every method is a collective: every
rank calls it at the same point of its loop, in the same order, or the group hangs. The
trainer calls them only at step boundaries (:meth:`control`), at records and at
checkpoints, so a step costs one small all-reduce on top of DDP's gradient all-reduce.

Nothing crosses the wire but numeric tensors (JSON travels as UTF-8 bytes in a uint8
tensor): no pickle, unlike ``broadcast_object_list``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from kraken.errors import ConfigError
from kraken.train.metrics import MetricSet

__all__ = ["Control", "WorkerGroup"]


@dataclasses.dataclass(frozen=True)
class Control:
    """What every rank agreed on at a step boundary (the sums of every rank's votes).

    ``samples``: samples all ranks will train in this step (0: every rank is out of
    data); ``active``: ranks that have a batch; ``stop``: some rank was asked to stop
    (a signal, ``max_samples``); ``checkpoint`` / ``log``: rank 0's cadence says one is
    due (only rank 0 votes, so every rank acts on rank 0's clock).
    """

    samples: int
    active: int
    stop: bool
    checkpoint: bool
    log: bool


class WorkerGroup:
    """Rank ``rank`` of ``world`` training workers in the default process group.

    ``seconds`` accumulates the wall time spent in this object's collectives (control,
    metric merges, barriers), for the benchmark's breakdown.
    """

    def __init__(self) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError("a worker group needs torch.distributed initialised "
                              "(start the workers with torchrun)")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.seconds = 0.0

    @property
    def leader(self) -> bool:
        """Rank 0 writes the records, the progress line and the checkpoints."""
        return self.rank == 0

    def control(self, *, samples: int, stop: bool, checkpoint: bool, log: bool) -> Control:
        """One all-reduce of ``[samples, has_batch, stop, checkpoint, log]`` (int64[5]).

        Only rank 0's ``checkpoint`` and ``log`` votes count.
        """
        lead = self.leader
        t = torch.tensor([samples, int(samples > 0), int(stop), int(checkpoint and lead),
                          int(log and lead)], dtype=torch.int64)
        self._all_reduce(t)
        v = t.tolist()
        return Control(samples=v[0], active=v[1], stop=v[2] > 0, checkpoint=v[3] > 0,
                       log=v[4] > 0)

    def merged(self, metrics: MetricSet) -> MetricSet:
        """A new :class:`MetricSet` holding every rank's observations (sums of states:
        AUC histograms, logloss and calibration sums), the same on every rank."""
        state = metrics.state()
        names = sorted(state)
        out = {}
        for name in names:  # one all-reduce per array, in the same order on every rank
            t = torch.from_numpy(np.ascontiguousarray(state[name]).copy())
            self._all_reduce(t)
            out[name] = t.numpy()
        m = MetricSet(auc_bins=metrics.metrics["auc"].bins)  # type: ignore[attr-defined]
        m.load_state(out)
        return m

    def gather(self, values: list[float]) -> list[list[float]]:
        """Every rank's ``values`` (the same length on every rank), in rank order."""
        t = torch.tensor(values, dtype=torch.float64)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        t0 = time.perf_counter()
        dist.all_gather(parts, t)
        self.seconds += time.perf_counter() - t0
        return [p.tolist() for p in parts]

    def gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data`` (any length), in rank order."""
        lengths = self.gather([float(len(data))])
        size = int(max(v[0] for v in lengths))
        buf = torch.zeros(size, dtype=torch.uint8)
        if data:
            buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return [bytes(p[:int(n[0])].numpy()) for p, n in zip(parts, lengths, strict=True)]

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's ``value`` (JSON-able) on every rank."""
        data = json.dumps(value).encode() if self.leader else b""
        n = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(n, 0)
        buf = torch.zeros(int(n.item()), dtype=torch.uint8)
        if self.leader and data:
            buf[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buf, 0)
        return json.loads(bytes(buf.numpy()).decode())

    def barrier(self) -> None:
        t0 = time.perf_counter()
        dist.barrier()
        self.seconds += time.perf_counter() - t0

    def _all_reduce(self, t: torch.Tensor) -> None:
        t0 = time.perf_counter()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self.seconds += time.perf_counter() - t0
