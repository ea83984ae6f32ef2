"""Training workers under ``torchrun``: the process group from torchrun's environment.

``torchrun --nproc-per-node W -m kraken.train --config run.toml`` (or ``kraken launch
--workers W``) starts ``W`` copies of ``kraken train``; each finds its rank in the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``, ``TORCHELASTIC_RESTART_COUNT``) and joins a gloo process group. With
one worker (no torchrun, or ``WORLD_SIZE=1``) nothing is initialised and the trainer
runs exactly as a single process does.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Callable, Iterator

from kraken.errors import ConfigError
from kraken.train.group import WorkerGroup

__all__ = ["block_tracer", "restarted", "worker_group"]


def _world() -> int:
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={text!r}: not a number of workers") from None


def restarted() -> bool:
    """Whether torchrun restarted this worker's group after a failure (then the run
    resumes from its newest checkpoint, as ``--resume`` would)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


@contextlib.contextmanager
def worker_group(timeout_s: float = 600.0) -> Iterator[WorkerGroup | None]:
    """The group of this worker (None with one worker); destroyed on the way out.

    ``timeout_s``: how long a collective waits for a missing rank before failing.
    """
    if _world() <= 1:
        yield None
        return
    import torch.distributed as dist  # noqa: PLC0415 - only for many workers

    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={_world()} but {', '.join(missing)} not set: start "
                          "the workers with torchrun (or `kraken launch --workers W`)")
    timeout = datetime.timedelta(seconds=timeout_s)
    rank, world = int(os.environ["RANK"]), _world()
    # torchrun's agent hosts the store and keeps it across restarts: without a prefix of
    # our own, a restarted group reads the dead group's addresses and cannot connect
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size=world, is_master=not agent and rank == 0,
                          timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("gloo", store=dist.PrefixStore(f"kraken/attempt-{attempt}", store),
                            rank=rank, world_size=world, timeout=timeout)
    try:
        yield WorkerGroup()
    finally:
        dist.destroy_process_group()


def block_tracer(path: str | None, rank: int) -> Callable[[int, int], None] | None:
    """A callback appending ``attempt rank start end unix_time pid`` for every block a worker
    trains to ``path`` (for failure drills that count records trained twice and time
    the recovery)."""
    if path is None:
        return None
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)

    def trace(start: int, end: int) -> None:
        with open(path, "a") as f:
            f.write(f"{attempt} {rank} {start} {end} {time.time():.3f} {os.getpid()}\n")

    return trace
