"""``kraken launch --config run.toml --shards S [--workers W]``: shards and trainers on one
machine.

Starts ``S`` shard processes (``kraken ps``) on free loopback ports, waits until every
one is ready, then runs ``kraken train`` against them: one process, or with ``--workers
W`` ``W`` of them under ``torchrun`` (``python -m torch.distributed.run --standalone
--nproc-per-node W --max-restarts R -m kraken.train ...``), which restarts the whole group
from the last complete checkpoint when a worker dies. When training ends the shards are
stopped; on Ctrl-C (or SIGTERM) the trainer(s) are asked to checkpoint and stop first.

Failures: if a shard dies, or the trainer fails because a shard is unreachable (exit
status 3), every process is stopped, the shards are started again, and the trainer
resumes from the last complete checkpoint (which also restores the shards), at most
``--max-restarts`` times. Records trained after that checkpoint are trained again;
nothing checkpointed is lost. Any other trainer failure (a bad config, bad data) ends
the launch with the trainer's status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kraken.checkpoint import CheckpointStore
from kraken.cli.train import resume_point
from kraken.errors import ConfigError
from kraken.ps.processes import ShardProcesses
from kraken.train.config import load_config

TRANSPORT_EXIT = 3
"""Exit status of ``kraken train`` (and every command) when a shard cannot be reached."""

_KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("launch", help="start PS shards and a trainer on this machine")
    p.add_argument("--config", required=True, help="the run's TOML file")
    p.add_argument("--shards", type=int, default=2, help="shard processes to start")
    p.add_argument("--run-dir", default=None, help="as for `kraken train`")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint of the run directory")
    p.add_argument("--workers", type=int, default=1,
                   help="training workers (W > 1: under torchrun, one model, the stream "
                        "split among them)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restarts of shards and trainer after a shard failure; with "
                        "--workers, also torchrun's restarts of the workers after a "
                        "worker failure")
    p.add_argument("--max-samples", type=int, default=None, help="as for `kraken train`")
    p.add_argument("--publish", default=None, metavar="MODEL_DIR",
                   help="serve from the shards: every shard publishes its rows into "
                        "MODEL_DIR (`kraken ps --publish`), the trainer the dense weights "
                        "(`kraken train --publish --rows-from-shards`)")
    p.add_argument("--ordered", action="store_true",
                   help="with --workers: the workers call the shards in rank order "
                        "(reproducible runs; see `kraken train --ordered`)")
    p.add_argument("--trace-blocks", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ready-timeout", type=float, default=120.0,
                   help="seconds to wait for the shards to start")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.shards < 1:
        raise ConfigError("--shards: must be >= 1")
    if args.workers < 1:
        raise ConfigError("--workers: must be >= 1")
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    # the whole run is validated before anything starts; shards read it resolved (every
    # table listed, every "auto" setting pinned as the trainer pins it: by the checkpoint
    # it resumes, else as a new run), so shards and trainer hold the same tables
    config = load_config(args.config)
    resolved = run_dir / "run.resolved.json"
    stopping = threading.Event()
    trainer: list[subprocess.Popen[str]] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        if trainer and trainer[0].poll() is None:
            _signal(trainer[0], signal.SIGTERM)  # checkpoint, then exit

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    resume = args.resume
    restarts = 0
    while True:
        checkpoint = resume_point(run_dir, resume, None)
        held = CheckpointStore.held_tables(checkpoint) if checkpoint is not None else None
        resolved.write_text(json.dumps(config.pinned(held).to_dict(), indent=1))
        shards = ShardProcesses(resolved, args.shards, timeout=args.ready_timeout,
                                extra=["--checkpoint-root", str(run_dir),
                                       *(["--publish", args.publish] if args.publish else [])],
                                echo=True)
        try:
            print(f"kraken launch: {args.shards} shard(s) ready on "
                  f"{', '.join(shards.addresses)}", flush=True)
            cmd = [*_trainer_command(args.workers, args.max_restarts),
                   "--config", args.config, "--run-dir", str(run_dir),
                   "--ps-shards", ",".join(shards.addresses)]
            if resume:
                cmd.append("--resume")
            if args.publish:
                cmd += ["--publish", args.publish, "--rows-from-shards"]
            if args.max_samples is not None:
                cmd += ["--max-samples", str(args.max_samples)]
            if args.ordered and args.workers > 1:
                cmd.append("--ordered")
            if args.trace_blocks is not None:
                cmd += ["--trace-blocks", args.trace_blocks]
            # its own session: a terminal's Ctrl-C reaches torchrun only through us
            trainer[:] = [subprocess.Popen(cmd, text=True, start_new_session=True)]
            shard_died = False
            while trainer[0].poll() is None:
                if shards.dead() and not stopping.is_set():
                    print(f"kraken launch: shard(s) {shards.dead()} died; stopping the "
                          "trainer", file=sys.stderr, flush=True)
                    shard_died = True
                    _stop(trainer[0])
                    break
                time.sleep(0.2)
            status = trainer[0].returncode
        finally:
            if trainer and trainer[0].poll() is None:
                _stop(trainer[0])
            shards.stop()
        if stopping.is_set() or status == 0:
            # torchrun exits non-zero whenever it was signalled; its workers checkpointed
            return 0 if status in (0, None) or args.workers > 1 else int(status)
        shard_failure = shard_died or status == TRANSPORT_EXIT or status < 0
        if not shard_failure:
            return int(status)
        if restarts >= args.max_restarts:
            print(f"kraken launch: giving up after {restarts} restart(s)", file=sys.stderr)
            return TRANSPORT_EXIT
        restarts += 1
        resume = True
        print(f"kraken launch: restart {restarts}/{args.max_restarts} from the last complete "
              "checkpoint", file=sys.stderr, flush=True)


def _trainer_command(workers: int, max_restarts: int) -> list[str]:
    """``kraken train``, or ``W`` of them under torchrun (arguments follow)."""
    if workers == 1:
        return [*_KRAKEN, "train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(workers), "--max-restarts", str(max_restarts),
            "-m", "kraken.train"]


def _signal(proc: subprocess.Popen[str], sig: int) -> None:
    """``sig`` to the trainer's whole session (torchrun and its workers)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    """SIGKILL the trainer's session (after a shard died nothing it does is kept) and reap."""
    _signal(proc, signal.SIGKILL)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
